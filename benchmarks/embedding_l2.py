"""`python -m benchmarks.embedding_l2`: the embedding regulariser's forms side by side.

Accuracy, not speed. Issue 13 moved the embedding L2 from FuxiCTR's form (lambda/2 * ||E||^2 over
the whole table, every step: "all") to the rows a batch looks up ("touched", and "batch-aware",
which weighs each touched row by 1 / P(row in a batch): `reloop_cli/training/regulariser.py`),
and asked for the Frappe bars to be re-measured. This trains bce DeepFM the way `reloop
reproduce` trains its bce arm (same split function, same encoding, same early stopping) for each
regulariser strength, each form and each seed, and prints test AUC / Logloss and their means.

By default the files are split 8:1:1 by a seeded hash of their impression ids, the split `reloop
reproduce` draws (from the files or from a workspace ingested from them: the bce figures agree).
`--split files` takes three files as train, validation and test (the full public Frappe split).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from reloop_cli.evaluation.metrics import auc, logloss
from reloop_cli.experiments.reproduce import encode_splits, parse_split, split_rows
from reloop_cli.models import build_model
from reloop_cli.spec.layout import dense_fields, field_slots
from reloop_cli.spec.pipeline import load_spec
from reloop_cli.training.fitting import fit, predict_batches

FRAPPE = Path(__file__).resolve().parents[2] / "shared" / "data" / "frappe"
DEFAULT_FILES = [FRAPPE / "frappe.validation.libfm", FRAPPE / "frappe.test.libfm"]


def run(
    spec_path: Path,
    files: list[Path],
    strengths: list[float],
    forms: list[str],
    seeds: list[int],
    epochs: int | None,
    split: str = "8:1:1",
) -> list[dict]:
    """Test AUC / Logloss of bce per (strength, form, seed), printed as each finishes."""
    spec = load_spec(spec_path).override("train", device="cpu")
    if epochs is not None:
        spec = spec.override("train", epochs=epochs)
    parts = split_rows(None, spec, files, parse_split(split), 0)
    tables, sizes = encode_splits(parts, spec)
    results = []
    for strength in strengths:
        for form in forms:
            for seed in seeds:
                trial = spec.override(
                    "train", embedding_l2=strength, embedding_l2_rows=form, seed=seed
                )
                torch.manual_seed(seed)
                model = build_model(
                    trial.model, sizes, len(dense_fields(trial)), field_slots(trial)
                )
                started = time.perf_counter()
                fitted = fit(model, tables["train"], tables["valid"], trial.train, "bce", 0.0, seed)
                label, prob = predict_batches(model, tables["test"])
                row = {
                    "embedding_l2": strength,
                    "rows": form,
                    "seed": seed,
                    "val_auc": round(fitted.best["val_auc"], 4),
                    "auc": round(auc(label, prob), 4),
                    "logloss": round(logloss(label, prob), 4),
                    "best_epoch": fitted.best_epoch,
                    "seconds": round(time.perf_counter() - started, 1),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
    return results


def summarise(results: list[dict]) -> list[dict]:
    """Mean (and standard deviation over seeds) per strength and form."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for row in results:
        groups.setdefault((row["embedding_l2"], row["rows"]), []).append(row)
    summary = []
    for (strength, form), rows in groups.items():
        aucs = [r["auc"] for r in rows]
        summary.append(
            {
                "embedding_l2": strength,
                "rows": form,
                "seeds": len(rows),
                "val_auc_mean": round(statistics.fmean(r["val_auc"] for r in rows), 4),
                "auc_mean": round(statistics.fmean(aucs), 4),
                "auc_std": round(statistics.stdev(aucs), 4) if len(aucs) > 1 else 0.0,
                "logloss_mean": round(statistics.fmean(r["logloss"] for r in rows), 4),
            }
        )
    return summary


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    parser.add_argument("--spec", type=Path, default=Path("pipelines/frappe.toml"))
    parser.add_argument("--l2", default="0.3", help="comma-separated strengths")
    parser.add_argument("--rows", default="all,touched,batch-aware", help="comma-separated forms")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's max")
    parser.add_argument(
        "--split", default="8:1:1", help="train:valid:test ratio, or 'files' (train, valid, test)"
    )
    args = parser.parse_args(argv)
    results = run(
        args.spec,
        list(args.files),
        [float(x) for x in args.l2.split(",")],
        args.rows.split(","),
        [int(x) for x in args.seeds.split(",")],
        args.epochs,
        args.split,
    )
    summary = summarise(results)
    # Choose a strength by the validation column: the test columns are what it then reaches.
    print(f"{'lambda':>7} {'rows':>11} {'seeds':>5} {'val AUC':>8} {'AUC':>15} {'Logloss':>8}")
    for row in summary:
        print(
            f"{row['embedding_l2']:>7} {row['rows']:>11} {row['seeds']:>5} "
            f"{row['val_auc_mean']:>8.4f} {row['auc_mean']:.4f} ± {row['auc_std']:.4f} "
            f"{row['logloss_mean']:>8.4f}"
        )
    return summary


if __name__ == "__main__":
    main()
