"""`python -m benchmarks.gpu [--out FILE] [--quick]`: every GPU figure in one prepared command.

No accelerator had been lent to this project when it was written, so each GPU claim of
docs/BENCHMARKS.md was unmeasured. This takes them all on one GPU in under 8 minutes and writes
one JSON (`--out`, default `gpu.json`):
1. a training step (DeepFM, 26 fields, MLP 400-400-400, batch 4096) at 26,000 and 10.4M table
   rows, dense and sparse updates (`benchmarks.embeddings`);
2. DeepFM training rows/s inside epochs on Frappe's 8:1:1 training split (`reloop reproduce`'s
   split; synthetic rows of Frappe's field sizes where the files are absent), with test AUC;
3. scoring rows/s in batches of 4,096 and 16,384;
4. two-rank DDP with sparse table gradients under nccl (`reloop train --nproc 2`): rows/s and
   next-day AUC against one process; it needs two GPUs, and says so when there is one.
Where torch sees no GPU it stops at once with one line and exit code 2; `--device cpu --quick`
runs the same code at tiny sizes on the CPU (the test suite does, so the script works when a
GPU is lent). FuxiCTR's side of item 2 needs its own environment and the network
(`python -m benchmarks.versus_fuxictr`); this script does not build it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import embeddings
from benchmarks.run import synthetic_table
from reloop_cli.evaluation.metrics import auc
from reloop_cli.models import build_model
from reloop_cli.spec.sections import ModelSpec, TrainSpec
from reloop_cli.training.environment import environment
from reloop_cli.training.fitting import fit, predict_batches
from reloop_cli.versions.score import predict

REPO = Path(__file__).resolve().parents[1]
FRAPPE = REPO.parent / "shared" / "data" / "frappe"
FRAPPE_SIZES = [958, 4083, 8, 8, 3, 4, 3, 10, 81, 234]


def no_gpu(device: str) -> str | None:
    """Why this device cannot be measured, or None."""
    if device == "cuda" and not torch.cuda.is_available():
        return "benchmarks.gpu: torch sees no GPU (cuda.is_available() is False); nothing measured"
    return None


def step_figures(device: torch.device, quick: bool) -> dict:
    sizes = (2_600, 26_000) if quick else (26_000, 10_400_000)
    hidden = (32,) if quick else (400, 400, 400)
    steps = 2 if quick else 12
    measured = {rows: embeddings.step_times(rows, steps, hidden, device=device) for rows in sizes}
    small, large = measured[sizes[0]], measured[sizes[-1]]
    return {
        "table_rows": list(sizes),
        "step_seconds": {str(rows): times for rows, times in measured.items()},
        "sparse_large_over_small": large["sparse"] / small["sparse"],
        "dense_large_over_small": large["dense"] / small["dense"],
    }


def frappe_tables(quick: bool) -> tuple[dict, list[int], str]:
    """Frappe's 8:1:1 split encoded as reproduce encodes it, or synthetic rows of its shape."""
    if not quick and (FRAPPE / "frappe.test.libfm").exists():
        from reloop_cli.experiments.reproduce import encode_splits, split_rows
        from reloop_cli.spec.pipeline import load_spec

        spec = load_spec(REPO / "pipelines" / "frappe.toml")
        files = [FRAPPE / "frappe.validation.libfm", FRAPPE / "frappe.test.libfm"]
        parts = split_rows(None, spec, files, (0.8, 0.1, 0.1), 0)  # type: ignore[arg-type]
        tables, sizes = encode_splits(parts, spec)
        return tables, sizes, "frappe 8:1:1"
    rows = 2_000 if quick else 69_265
    tables = {name: synthetic_table(rows, seed) for seed, name in enumerate(("train", "valid"))}
    tables["test"] = synthetic_table(rows // 4, 2)
    return tables, [size + 1 for size in FRAPPE_SIZES], "synthetic, Frappe's field sizes"


def training_figures(device: torch.device, quick: bool) -> dict:
    tables, sizes, data = frappe_tables(quick)
    spec = ModelSpec(embedding_dim=10, hidden_units=(32,) if quick else (400, 400, 400))
    settings = TrainSpec(epochs=1 if quick else 5, batch_size=1024, device=device.type, seed=0)
    torch.manual_seed(0)
    model = build_model(spec, sizes, 0)
    result = fit(model, tables["train"], tables["valid"], settings, "bce", 0.0, 0)
    seconds = sum(entry["train_seconds"] for entry in result.history)
    label, prob = predict_batches(model, tables["test"])
    return {
        "data": data,
        "train_rows_per_s": len(tables["train"]) * len(result.history) / seconds,
        "epochs": len(result.history),
        "test_auc": auc(label, prob),
    }


def scoring_figures(device: torch.device, quick: bool) -> dict:
    rows = 20_000 if quick else 2_000_000
    table = synthetic_table(rows, 3)
    torch.manual_seed(0)
    model = build_model(ModelSpec(hidden_units=(400, 400, 400)), [s + 1 for s in FRAPPE_SIZES], 0)
    model.to(device)
    categorical = table.categorical.to(device)
    dense = table.dense.to(device)
    figures = {}
    for batch in (4_096, 16_384):
        predict_on(model, categorical[:batch], dense[:batch], batch)  # warm up the kernels
        started = time.perf_counter()
        predict_on(model, categorical, dense, batch)
        figures[f"rows_per_s_batch_{batch}"] = rows / (time.perf_counter() - started)
    return figures


def predict_on(model, categorical, dense, batch: int):
    """`versions.score.predict` on the model's device (it hands back a CPU array)."""
    if categorical.device.type == "cpu":
        return predict(model, categorical, dense, batch)
    with torch.no_grad():
        out = [
            torch.sigmoid(model(categorical[i : i + batch], dense[i : i + batch]))
            for i in range(0, categorical.shape[0], batch)
        ]
        torch.cuda.synchronize()
    return torch.cat(out).cpu().numpy()


def ddp_figures(device: torch.device, quick: bool) -> dict:
    """`reloop train` on one process and on two nccl ranks, on the same synth workspace."""
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        found = torch.cuda.device_count() if device.type == "cuda" else 0
        return {"skipped": f"two-rank nccl DDP needs 2 GPUs; this machine has {found}"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reloop = [sys.executable, "-m", "reloop_cli"]
        rows = "20000" if quick else "300000"
        logs = root / "logs"
        subprocess.run(
            [*reloop, "synth", "--days", "3", "--rows-per-day", rows, "--out", str(logs)],
            check=True,
        )
        figures = {}
        for nproc in (1, 2):
            ws = root / f"ws-{nproc}"
            spec = str(REPO / "pipelines" / "sample.toml")
            subprocess.run([*reloop, "ingest", str(logs), "-s", spec, "-w", str(ws)], check=True)
            env = {"RELOOP_TRAIN_EMBEDDING_UPDATES": '"sparse"', "RELOOP_TRAIN_DEVICE": '"cuda"'}
            started = time.perf_counter()
            trained = subprocess.run(
                [
                    *reloop,
                    "train",
                    "--day",
                    "2024-01-02",
                    "-w",
                    str(ws),
                    "--nproc",
                    str(nproc),
                    "--json",
                ],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, **env},
            )
            seconds = time.perf_counter() - started
            result = json.loads(trained.stdout)
            evaluated = subprocess.run(
                [
                    *reloop,
                    "eval",
                    "-v",
                    str(result["version"]),
                    "--day",
                    "2024-01-03",
                    "-w",
                    str(ws),
                    "--json",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            figures[f"nproc_{nproc}"] = {
                "seconds": seconds,
                "rows_per_s": result["rows"] * len(result["history"]) / seconds,
                "next_day_auc": json.loads(evaluated.stdout)["metrics"]["auc"],
            }
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    reason = no_gpu(args.device)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    device = torch.device(args.device)
    started = time.perf_counter()
    figures = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "environment": environment(),
        "step": step_figures(device, args.quick),
        "training": training_figures(device, args.quick),
        "scoring": scoring_figures(device, args.quick),
        "ddp_nccl": ddp_figures(device, args.quick),
    }
    figures["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    step = figures["step"]
    print(
        f"device {figures['device']}: the whole run took {figures['seconds']:.0f} s -> {args.out}"
    )
    small, large = step["table_rows"]
    print(
        f"step at {large:,} over {small:,} table rows: sparse "
        f"{step['sparse_large_over_small']:.2f}x, dense {step['dense_large_over_small']:.2f}x"
    )
    training = figures["training"]
    print(
        f"training ({training['data']}): {training['train_rows_per_s']:,.0f} rows/s inside "
        f"epochs, test AUC {training['test_auc']:.4f}"
    )
    print(
        "scoring: "
        + ", ".join(f"{v:,.0f} rows/s ({k.split('_')[-1]})" for k, v in figures["scoring"].items())
    )
    print(f"ddp nccl: {figures['ddp_nccl']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
