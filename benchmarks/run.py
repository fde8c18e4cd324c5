"""`python -m benchmarks [--quick]`: speed figures measured side by side in one run.

Prints one line per figure with its ratio to the reference measured in the same run:
1. DeepFM training throughput (rows/s), reloop's loop vs a plain-PyTorch reference loop (the
   same network with torch's own `nn.Dropout`);
2. the same as a fraction of this machine's matmul FLOP/s;
3. the reloop loss's training cost over bce (same model, data, seed);
4. ingest (CSV -> day-partitioned Parquet) and the ỹ_last window join, rows/s;
5. scoring throughput, rows/s;
6. a training step's time as the embedding table grows from 26,000 to 10.4M rows, dense vs
   sparse updates (`benchmarks/embeddings.py`).
Training and scoring use random rows with Frappe's ten field sizes (69,265 rows: the training
part of its 8:1:1 split); ingest and the join run on a 10M-row synthetic log. FuxiCTR side by
side is `python -m benchmarks.versus_fuxictr` (it needs its own virtual environment), and the
30-day scale run with its memory is `python -m benchmarks.scale`.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks import embeddings
from reloop_cli.data.ingest import ingest
from reloop_cli.features.encoding import TensorTable
from reloop_cli.models import build_model
from reloop_cli.models.dropout import Dropout
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.spec.sections import ModelSpec, TrainSpec
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.fitting import train_epoch
from reloop_cli.training.losses import training_loss
from reloop_cli.training.optimizers import Optimizer, wants_sparse
from reloop_cli.training.window import attach_last
from reloop_cli.versions.score import SCORE_BATCH, predict

FIELD_SIZES = [958, 4083, 8, 8, 3, 4, 3, 10, 81, 234]  # Frappe's 10 fields (+ OOV row)


def synthetic_table(rows: int, seed: int = 0) -> TensorTable:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(1, s, (rows,), generator=g) for s in FIELD_SIZES], dim=1)
    label = (torch.rand(rows, generator=g) < 0.33).float()
    y_last = torch.rand(rows, generator=g)
    return TensorTable(cat, torch.zeros(rows, 0), label, y_last)


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def with_torch_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """The same network as a user would write it, with `nn.Dropout` in place of reloop's."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, Dropout):
                setattr(module, name, torch.nn.Dropout(child.p))
    return model


def reference_epoch(model: torch.nn.Module, table: TensorTable, batch: int) -> None:
    """The plain loop a user would write: shuffle, slice, BCE, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(table))
    model.train()
    for i in range(0, len(table), batch):
        idx = order[i : i + batch]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(table.categorical[idx], table.dense[idx]), table.label[idx]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def loss_seconds(loss: str, repeat: int = 2_000) -> float:
    """Forward + backward of one 1024-row batch's loss, averaged over `repeat` calls."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1024, generator=g, requires_grad=True)
    label = (torch.rand(1024, generator=g) < 0.3).float()
    y_last = torch.rand(1024, generator=g)
    for _ in range(100):
        training_loss(loss, logits, label, y_last, 0.5).backward()
    start = time.perf_counter()
    for _ in range(repeat):
        training_loss(loss, logits, label, y_last, 0.5).backward()
    return (time.perf_counter() - start) / repeat


def matmul_flops(size: int) -> float:
    a, b = torch.randn(1024, size), torch.randn(size, size)
    seconds = timed(lambda: [a @ b for _ in range(20)], repeat=3)
    return 20 * 2 * 1024 * size * size / seconds


def model_flops_per_row(spec: ModelSpec) -> float:
    """Multiply-adds of the MLP, forward + backward (x3), as FLOPs; embeddings/FM are small."""
    widths = [len(FIELD_SIZES) * spec.embedding_dim, *spec.hidden_units, 1]
    return 3 * sum(2 * a * b for a, b in itertools.pairwise(widths))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    rows = 4_096 if args.quick else 69_265
    hidden = (16, 16) if args.quick else (400, 400, 400)
    spec = ModelSpec(
        name="deepfm", embedding_dim=10, hidden_units=hidden, batch_norm=True, dropout=0.2
    )
    table = synthetic_table(rows)
    figures: dict[str, float] = {}

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(spec, FIELD_SIZES, 0)

    settings = TrainSpec(batch_size=1024, device="cpu")
    g = torch.Generator()

    def epoch(loss: str, alpha: float) -> None:
        model = fresh()
        sparse = wants_sparse(settings.embedding_updates, model)
        optimizer = Optimizer(model, 1e-3, sparse, settings.embedding_l2)
        train_epoch(model, table, settings, optimizer, loss, alpha, g)

    # Warm up (thread pools, allocator), then interleave the loops and the matmul round by
    # round: rates are each one's best round, and the reloop/bce cost is the median of the
    # per-round ratios, so drift in this shared machine's speed favours neither side.
    for _ in range(1 if args.quick else 2):
        epoch("bce", 0.0)
    rounds: dict[str, list[float]] = {"bce": [], "reloop": [], "plain": [], "matmul": []}
    for _ in range(1 if args.quick else 5):
        rounds["bce"].append(timed(lambda: epoch("bce", 0.0)))
        rounds["reloop"].append(timed(lambda: epoch("reloop", 0.5)))
        plain = with_torch_dropout(fresh())
        rounds["plain"].append(timed(lambda: reference_epoch(plain, table, 1024)))  # noqa: B023
        rounds["matmul"].append(matmul_flops(hidden[0]))
    ours, ref = min(rounds["bce"]), min(rounds["plain"])
    figures["train_rows_per_s"] = rows / ours
    print(
        f"training, DeepFM {hidden}: reloop {rows / ours:,.0f} rows/s, plain PyTorch "
        f"{rows / ref:,.0f} rows/s (ratio {ref / ours:.2f})"
    )

    limit = max(rounds["matmul"])
    used = model_flops_per_row(spec) * rows / ours
    figures["fraction_of_matmul_limit"] = used / limit
    print(
        f"machine limit: 1024x{hidden[0]}x{hidden[0]} matmul {limit / 1e9:,.1f} GFLOP/s; "
        f"training uses {used / 1e9:,.1f} GFLOP/s ({100 * used / limit:.0f}% of it)"
    )

    ratios = sorted(r / b for r, b in zip(rounds["reloop"], rounds["bce"], strict=True))
    figures["reloop_over_bce"] = ratios[len(ratios) // 2]
    print(
        f"reloop loss vs bce, training time: median ratio {figures['reloop_over_bce']:.3f} "
        f"over {len(ratios)} paired rounds (range {ratios[0]:.3f} - {ratios[-1]:.3f})"
    )
    # The epoch ratio above is at the mercy of the machine's noise; the loss's own cost is not.
    extra = loss_seconds("reloop") - loss_seconds("bce")
    step = min(rounds["bce"]) / -(-rows // 1024)
    figures["reloop_loss_extra_per_step"] = extra / step
    print(
        f"reloop loss vs bce, the loss alone (forward + backward, 1024 rows): "
        f"{extra * 1e6:+.0f} us a step, {100 * extra / step:.1f}% of a {step * 1e3:.1f} ms step"
    )

    with tempfile.TemporaryDirectory() as tmp:
        n = 20_000 if args.quick else 10_000_000
        rng = np.random.default_rng(0)
        csv = Path(tmp) / "log.csv"
        pl.DataFrame(
            {
                "label": rng.integers(0, 2, n),
                "u": rng.integers(0, 1000, n),
                "i": rng.integers(0, 5000, n),
                "ts": 1_704_067_200 + rng.integers(0, 86_400 * 3, n),
            }
        ).write_csv(csv)
        data = spec_from_dict({"data": {"categorical": ["u", "i"], "time_column": "ts"}}, "b")
        ws = Workspace(Path(tmp) / "ws")
        seconds = timed(lambda: ingest(ws, data, [csv]))
        figures["ingest_rows_per_s"] = n / seconds
        print(f"ingest CSV -> day Parquet: {n / seconds:,.0f} rows/s ({n:,} rows)")
        # Each day's scores as `reloop score` writes them: in the order of the day's logs.
        scores = {}
        for day in ws.days():
            path = Path(tmp) / f"scores-{day}.parquet"
            ws.scan_logs([day]).select("impression_id", pl.lit(0.5).alias("pctr")).sink_parquet(
                path
            )
            scores[day] = pl.scan_parquet(path)

        def by_position() -> pl.DataFrame:  # what `training_rows` does
            days = [attach_last(ws.scan_logs([d]), scores[d]) for d in ws.days()]
            return pl.concat(days, how="diagonal_relaxed").collect()

        def hash_join() -> pl.DataFrame:  # the order-keeping left join it replaced
            all_scores = pl.concat(list(scores.values()))
            return (
                ws.scan_logs(ws.days())
                .join(all_scores, on="impression_id", how="left", maintain_order="left")
                .collect()
            )

        join, plain = timed(by_position, repeat=3), timed(hash_join, repeat=3)
        figures["join_rows_per_s"] = n / join
        print(
            f"ỹ_last window join: {n / join:,.0f} rows/s; a left hash join on ids "
            f"{n / plain:,.0f} rows/s (ratio {plain / join:.1f})"
        )

    model = fresh()
    chosen, large = float("inf"), float("inf")
    for _ in range(5):  # interleaved: reloop's batch against a 4x larger one
        chosen = min(chosen, timed(lambda: predict(model, table.categorical, table.dense)))
        large = min(large, timed(lambda: predict(model, table.categorical, table.dense, 16_384)))
    figures["score_rows_per_s"] = rows / chosen
    print(
        f"scoring DeepFM: {rows / chosen:,.0f} rows/s in batches of {SCORE_BATCH}; "
        f"{rows / large:,.0f} rows/s in batches of 16384 (ratio {large / chosen:.2f})"
    )
    figures.update(embeddings.main(["--quick"] if args.quick else []))
    return figures


if __name__ == "__main__":
    main()
