"""`python -m benchmarks.embeddings`: a training step's time as the embedding table grows.

DeepFM with 26 fields, embedding 16, MLP 400-400-400, batch 4096, reloop loss, the table at
26,000 .. 10.4M rows (rows spread evenly over the fields, indices drawn uniformly). For each size
steps are timed with dense Adam over the whole table (reloop before issue 13) and with RowAdam on
the rows the batch touches, in alternating blocks so the machine's drift favours neither; each
figure is the median step. `python -m benchmarks` runs this too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reloop_cli.models import build_model
from reloop_cli.spec.sections import ModelSpec
from reloop_cli.training.losses import training_loss
from reloop_cli.training.optimizers import SPARSE_MIN_ROWS, Optimizer
from reloop_cli.training.regulariser import embedding_penalty

FIELDS = 26
SIZES = (26_000, 260_000, 2_600_000, 10_400_000)
BATCH = 4096
BLOCK = 3  # steps in a row of one kind; the first warms the caches for that kind
CPU = torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: wait for them before the clock
        torch.cuda.synchronize(device)


def _step(model, optimizer, batch, l2: float, device: torch.device = CPU) -> float:
    categorical, dense, label, y_last = (t.to(device) for t in batch)
    _sync(device)
    start = time.perf_counter()
    objective = training_loss("reloop", model(categorical, dense), label, y_last, 0.5)
    if (
        l2 and not optimizer.sparse
    ):  # as the training loop does: sparse tables regularise in RowAdam
        objective = objective + l2 / 2 * embedding_penalty(model, categorical)
    optimizer.zero_grad()
    objective.backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def step_times(
    rows: int,
    steps: int,
    hidden: tuple[int, ...],
    l2: float = 0.0,
    regularised: bool = True,
    device: torch.device = CPU,
) -> dict:
    """Median seconds of a dense and a sparse step with a table of `rows` rows; `regularised`:
    batch norm and dropout 0.2, as the shipped Avazu and Criteo specs train this network."""
    spec = ModelSpec(
        name="deepfm",
        embedding_dim=16,
        hidden_units=hidden,
        batch_norm=regularised,
        dropout=0.2 if regularised else 0.0,
    )
    sizes = [rows // FIELDS] * FIELDS
    generator = torch.Generator().manual_seed(0)

    def batch():
        categorical = torch.stack(
            [torch.randint(1, s, (BATCH,), generator=generator) for s in sizes], dim=1
        )
        label = (torch.rand(BATCH, generator=generator) < 0.2).float()
        return categorical, torch.zeros(BATCH, 0), label, torch.rand(BATCH, generator=generator)

    models = {}
    for kind in ("dense", "sparse"):
        torch.manual_seed(0)
        model = build_model(spec, sizes, 0).to(device)
        models[kind] = (model, Optimizer(model, 1e-3, kind == "sparse", l2))
    times = {"dense": [], "sparse": []}
    # Rounds alternate the two, BLOCK steps each, the first of each block not counted: a dense
    # step over a 10.4M-row table sweeps gigabytes through the caches, and a sparse step timed
    # right after it would pay for that, which it never does in a run of its own.
    for _ in range(-(-steps // (BLOCK - 1))):
        for kind, (model, optimizer) in models.items():
            for index in range(BLOCK):
                seconds = _step(model, optimizer, batch(), l2, device)
                if index:
                    times[kind].append(seconds)
    return {kind: statistics.median(values) for kind, values in times.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embeddings")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--l2", type=float, default=0.0, help="embedding_l2 in the step")
    parser.add_argument("--plain", action="store_true", help="no batch norm, no dropout")
    args = parser.parse_args(argv)
    sizes = (2_600, 26_000) if args.quick else SIZES
    hidden = (32,) if args.quick else (400, 400, 400)
    steps = 2 if args.quick else args.steps
    measured = {rows: step_times(rows, steps, hidden, args.l2, not args.plain) for rows in sizes}
    small, large = measured[sizes[0]], measured[sizes[-1]]
    for rows, t in measured.items():
        faster = "sparse" if t["sparse"] < t["dense"] else "dense"
        print(
            f"table {rows:>10,} rows: dense step {t['dense'] * 1e3:7.1f} ms, sparse step "
            f"{t['sparse'] * 1e3:7.1f} ms ({faster} faster, ratio {t['dense'] / t['sparse']:.2f})"
        )
    auto = {
        rows: t["sparse"] if rows >= SPARSE_MIN_ROWS else t["dense"] for rows, t in measured.items()
    }
    figures = {
        "dense_large_over_small": large["dense"] / small["dense"],
        "sparse_large_over_small": large["sparse"] / small["sparse"],
        "auto_large_over_small": auto[sizes[-1]] / auto[sizes[0]],
        "auto_over_dense_small": auto[sizes[0]] / small["dense"],
    }
    print(
        f"step time, {sizes[-1]:,} rows over {sizes[0]:,}: "
        f"dense {figures['dense_large_over_small']:.2f}x, "
        f"sparse {figures['sparse_large_over_small']:.2f}x, auto (sparse from "
        f"{SPARSE_MIN_ROWS:,} rows) {figures['auto_large_over_small']:.2f}x; auto at "
        f"{sizes[0]:,} rows takes {figures['auto_over_dense_small']:.2f}x the dense step"
    )
    return figures


if __name__ == "__main__":
    main()
