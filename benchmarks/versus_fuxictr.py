"""`python -m benchmarks.versus_fuxictr`: reloop and FuxiCTR side by side on the same Frappe rows.

Frappe's validation + test files (../shared/data/frappe, 86,582 rows) are split 8:1:1 with
reloop's seeded split (seed 0) and written as three CSV files. Then, in one run:
- preprocessing: reloop's ingest (CSV -> validated, day-partitioned Parquet) plus its vocabulary
  and encoding of every row, against FuxiCTR's FeatureProcessor + build_dataset of the same CSVs;
- training: DeepFM (embedding 10, 400-400-400, batch norm, dropout 0.2, Adam 1e-3, batch 1024,
  embedding regulariser EMB_REG, gradient norm clipped at 10, early stop on validation AUC with
  patience 2, reduce-on-plateau)
  in each library, reporting training rows/s inside the epochs, the whole fit's wall time, and
  the test AUC / Logloss each reaches (a speed-up that loses accuracy does not count).
FuxiCTR runs in its own virtual environment (.bench/fuxictr-venv), made on first use: it needs
`polars<2` and Ray, which reloop's own environment does not have.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import torch

from reloop_cli.data.ingest import ingest, load_files
from reloop_cli.evaluation.metrics import auc, logloss
from reloop_cli.experiments.reproduce import encode_splits, split_rows
from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import encode
from reloop_cli.models import build_model
from reloop_cli.spec.pipeline import load_spec, spec_from_dict
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.fitting import fit, predict_batches

REPO = Path(__file__).resolve().parent.parent
FRAPPE = REPO.parent / "shared" / "data" / "frappe"
FUXICTR_VENV = REPO / ".bench" / "fuxictr-venv"
FUXICTR_PACKAGES = ["fuxictr==2.3.10", "polars<2", "ray[data]"]
FRAPPE_SPEC = load_spec(REPO / "pipelines" / "frappe.toml")
FIELDS = list(FRAPPE_SPEC.data.categorical)
# The split CSVs as reloop reads them: a header line, the label, then the Frappe fields.
CSV_SPEC = spec_from_dict(
    {"data": {"format": "csv", "label": "label", "categorical": FIELDS}}, "benchmark"
)


def fuxictr_python() -> Path:
    """FuxiCTR's interpreter, installing its venv first if it is not there yet."""
    python = FUXICTR_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {FUXICTR_VENV} (fuxictr 2.3.10, polars<2, ray; a few minutes, once)")
        venv.create(FUXICTR_VENV, with_pip=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True)
        subprocess.run([*pip, *FUXICTR_PACKAGES], check=True)
    return python


def write_split_csvs(out: Path) -> dict[str, int]:
    """The 8:1:1 split of reloop's `reproduce` (seed 0), as train/valid/test CSV files."""
    files = [FRAPPE / "frappe.validation.libfm", FRAPPE / "frappe.test.libfm"]
    parts = split_rows(None, FRAPPE_SPEC, files, (0.8, 0.1, 0.1), 0)  # type: ignore[arg-type]
    for name, frame in parts.items():
        frame.select("label", *FIELDS).write_csv(out / f"{name}.csv")
    return {name: len(frame) for name, frame in parts.items()}


def reloop_preprocess(data: Path) -> float:
    """Seconds for reloop to ingest the three CSVs and encode every row with one vocabulary."""
    start = time.perf_counter()
    ws = Workspace(data / "reloop-ws")
    ingest(ws, CSV_SPEC, [data / f"{n}.csv" for n in ("train", "valid", "test")], days=1)
    logs = ws.scan_logs(ws.days())
    vocab, sizes = vocabulary.build(CSV_SPEC, logs)
    encode(logs, CSV_SPEC, vocab, sizes).collect()
    return time.perf_counter() - start


def reloop_train(data: Path, epochs: int, emb_reg: float) -> dict:
    spec = FRAPPE_SPEC.override(
        "train",
        embedding_l2=emb_reg,
        epochs=epochs,
        batch_size=1024,
        device="cpu",
        seed=0,
        max_grad_norm=10.0,  # FuxiCTR's BaseModel.fit clips at 10
    )
    frames = {
        n: load_files([data / f"{n}.csv"], CSV_SPEC, 1, CSV_SPEC.data.start_date)
        for n in ("train", "valid", "test")
    }
    tables, sizes = encode_splits(frames, CSV_SPEC)  # one vocabulary, from the training rows
    torch.manual_seed(0)
    model = build_model(spec.model, sizes, 0)
    start = time.perf_counter()
    result = fit(model, tables["train"], tables["valid"], spec.train, "bce", 0.0, 0)
    fit_s = time.perf_counter() - start
    label, prob = predict_batches(model, tables["test"])
    return {
        "fit_seconds": fit_s,
        "epoch_train_seconds": [e["train_seconds"] for e in result.history],
        "train_rows": len(tables["train"]),
        "test_auc": auc(label, prob),
        "test_logloss": logloss(label, prob),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus_fuxictr")
    parser.add_argument("--epochs", type=int, default=50, help="at most; both stop early")
    parser.add_argument("--emb-reg", type=float, default=0.05, help="embedding regulariser")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not FRAPPE.exists():
        sys.exit(f"{FRAPPE}: not found; this benchmark needs the shared Frappe files")
    python = fuxictr_python()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        counts = write_split_csvs(data)
        print(f"Frappe 8:1:1 (seed 0): {counts}")
        ours_pre = reloop_preprocess(data)
        ours = reloop_train(data, args.epochs, args.emb_reg)
        result = data / "fuxictr.json"
        subprocess.run(
            [
                str(python),
                str(Path(__file__).with_name("fuxictr_deepfm.py")),
                str(data),
                str(result),
                str(args.epochs),
                str(args.emb_reg),
            ],
            check=True,
        )
        theirs = json.loads(result.read_text())
    rows = sum(counts.values())
    their_pre = theirs["preprocess_seconds"]
    print(
        f"preprocess {rows:,} CSV rows: reloop {ours_pre:.2f}s, FuxiCTR {their_pre:.2f}s "
        f"(ratio {their_pre / ours_pre:.1f})"
    )
    figures = {
        "rows": counts,
        "emb_reg": args.emb_reg,
        "preprocess_seconds": {"reloop": ours_pre, "fuxictr": theirs["preprocess_seconds"]},
    }
    for name, side in (("reloop", ours), ("fuxictr", theirs)):
        epochs = len(side["epoch_train_seconds"])
        side["epochs"] = epochs
        side["train_rows_per_s"] = side["train_rows"] * epochs / sum(side["epoch_train_seconds"])
        side["fit_rows_per_s"] = side["train_rows"] * epochs / side["fit_seconds"]
        figures[name] = side
    print(
        f"DeepFM training inside epochs: reloop {ours['train_rows_per_s']:,.0f} rows/s, FuxiCTR "
        f"{theirs['train_rows_per_s']:,.0f} rows/s (ratio "
        f"{ours['train_rows_per_s'] / theirs['train_rows_per_s']:.2f})"
    )
    print(
        f"whole fit incl. validation: reloop {ours['fit_seconds']:.0f}s for {ours['epochs']} "
        f"epochs ({ours['fit_rows_per_s']:,.0f} rows/s), FuxiCTR {theirs['fit_seconds']:.0f}s "
        f"for {theirs['epochs']} epochs ({theirs['fit_rows_per_s']:,.0f} rows/s) (ratio "
        f"{ours['fit_rows_per_s'] / theirs['fit_rows_per_s']:.2f})"
    )
    print(
        f"test AUC / Logloss: reloop {ours['test_auc']:.4f} / {ours['test_logloss']:.4f}, "
        f"FuxiCTR {theirs['test_auc']:.4f} / {theirs['test_logloss']:.4f}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
