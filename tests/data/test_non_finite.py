"""Non-finite numbers never reach a model: refused (or read as missing) at ingest, and whatever
the input, no version with a NaN pCTR is published, scored from or promoted."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.data.ingest import ingest
from reloop_cli.errors import EXIT_BAD_INPUT, EXIT_TRAINING_FAILED, BadInput
from reloop_cli.operations.gate import GateOutcome, run_gate
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.store.registry import Registry
from tests.helpers import workspace_files

runner = CliRunner()
SPEC = {
    "name": "prices",
    "data": {
        "label": "click",
        "categorical": ["user"],
        "numeric": ["price"],
        "time_column": "ts",
        "impression_id": "id",
    },
    "model": {"name": "deepfm", "embedding_dim": 4, "hidden_units": [8]},
    "train": {"epochs": 1, "batch_size": 128, "validation_fraction": 0.0, "loss": "bce"},
    "gate": {"min_clicks": 1, "max_auc_drop": 1.0, "max_logloss_rise": 10.0},
}


def spec(**data):
    raw = json.loads(json.dumps(SPEC))
    raw["data"].update(data)
    return spec_from_dict(raw)


def day_rows(day: int, rows: int = 400, bad: dict[int, float] | None = None) -> pl.DataFrame:
    rng = np.random.default_rng(day)
    price = rng.uniform(1, 100, rows)
    for row, value in (bad or {}).items():
        price[row] = value
    return pl.DataFrame(
        {
            "id": [f"d{day}-{i}" for i in range(rows)],
            "ts": 1_704_067_200 + 86_400 * day + np.arange(rows) * 60,
            "user": [f"u{u}" for u in rng.integers(0, 30, rows)],
            "price": price,
            "click": (rng.random(rows) < 0.2).astype(int),
        }
    )


def write(frame: pl.DataFrame, path, as_csv: bool):
    if as_csv:
        frame.with_columns(pl.col("price").cast(pl.String)).write_csv(path)
    else:
        frame.write_parquet(path)
    return path


@pytest.mark.parametrize("as_csv", [True, False], ids=["csv", "parquet"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_number_is_refused_with_file_row_and_field(tmp_path, ws, as_csv, value):
    path = write(
        day_rows(0, bad={6: value}), tmp_path / ("d0.csv" if as_csv else "d0.parquet"), as_csv
    )
    with pytest.raises(BadInput) as refused:
        ingest(ws, spec(), [path])
    message = str(refused.value)
    assert f"{path}: row 7: numeric field 'price'" in message
    assert "is not a finite number" in message
    assert workspace_files(ws) == []


@pytest.mark.parametrize("as_csv", [True, False], ids=["csv", "parquet"])
def test_with_non_finite_missing_they_are_read_as_empty_cells(tmp_path, ws, as_csv):
    bad = {3: float("nan"), 4: float("inf"), 5: float("-inf")}
    path = write(day_rows(0, bad=bad), tmp_path / ("d0.csv" if as_csv else "d0.parquet"), as_csv)
    ingest(ws, spec(non_finite="missing"), [path])
    price = ws.scan_logs(ws.days()).collect()["price"]
    assert price[3:6].to_list() == [None, None, None]
    assert price.drop_nulls().is_finite().all() and price.null_count() == 3


def test_within_the_reject_allowance_they_go_to_rejects(tmp_path, ws):
    path = write(day_rows(0, bad={1: float("inf")}), tmp_path / "d0.parquet", False)
    result = ingest(ws, spec(max_reject_fraction=0.01), [path])
    assert result.rejected == 1 and result.rows == 399
    reasons = pl.read_parquet(ws.rejects / "*" / "*.parquet")["reject_reason"].to_list()
    assert reasons == [
        "numeric field 'price' = 'inf' is not a finite number "
        '(data.non_finite = "missing" reads it as an empty cell)'
    ]


def _spec_file(tmp_path, **train) -> str:
    lines = ['name = "prices"', "[data]", 'label = "click"', 'categorical = ["user"]']
    lines += ['numeric = ["price"]', 'time_column = "ts"', 'impression_id = "id"']
    lines += ['non_finite = "missing"', "[model]", "embedding_dim = 4", "hidden_units = [8]"]
    lines += ["[train]", "validation_fraction = 0.0"]
    train = {"epochs": 1, **train}
    lines += [f"{key} = {value}" for key, value in train.items()]
    path = tmp_path / "prices.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_version_trained_on_missing_values_predicts_only_finite_numbers(tmp_path, ws):
    files = [
        write(day_rows(d, bad={2: float("nan")}), tmp_path / f"d{d}.parquet", False)
        for d in range(2)
    ]
    spec_file = _spec_file(tmp_path)
    assert (
        runner.invoke(
            app, ["ingest", *map(str, files), "-s", spec_file, "-w", str(ws.root)]
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["train", "--day", "2024-01-01", "-w", str(ws.root)]).exit_code == 0
    scored = runner.invoke(app, ["score", "-v", "1", "--day", "2024-01-02", "-w", str(ws.root)])
    assert scored.exit_code == 0, scored.output
    assert ws.scan_scores(1, "2024-01-02").collect()["pctr"].is_finite().all()


def test_training_that_diverges_publishes_nothing_and_says_so_in_one_line(tmp_path, ws):
    files = [write(day_rows(d), tmp_path / f"d{d}.parquet", False) for d in range(2)]
    spec_file = _spec_file(tmp_path, learning_rate="1e30")
    assert (
        runner.invoke(
            app, ["ingest", *map(str, files), "-s", spec_file, "-w", str(ws.root)]
        ).exit_code
        == 0
    )
    before = workspace_files(ws)
    result = runner.invoke(app, ["train", "--day", "2024-01-01", "-w", str(ws.root)])
    assert result.exit_code == EXIT_TRAINING_FAILED, result.output
    lines = result.output.strip().splitlines()
    assert (
        len(lines) == 1 and "training diverged" in lines[0] and "nothing was published" in lines[0]
    )
    assert not list(ws.models.glob("v*"))
    with Registry(ws) as registry:
        assert registry.versions() == []
    assert [
        p
        for p in workspace_files(ws)
        if p not in before and "registry" not in p.name and "vocab" not in p.name
    ] == []


def _break_weights(ws, version: int) -> None:
    path = ws.model_dir(version) / "weights.pt"
    state = torch.load(path, weights_only=True)
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    torch.save(state, path)


def test_a_broken_version_is_neither_scored_from_nor_promoted(tmp_path, ws):
    files = [write(day_rows(d), tmp_path / f"d{d}.parquet", False) for d in range(3)]
    spec_file = _spec_file(tmp_path)
    assert (
        runner.invoke(
            app, ["ingest", *map(str, files), "-s", spec_file, "-w", str(ws.root)]
        ).exit_code
        == 0
    )
    for day in ("2024-01-01", "2024-01-02"):
        trained = runner.invoke(app, ["train", "--day", day, "-w", str(ws.root), "--no-promote"])
        assert trained.exit_code == 0, trained.output
    _break_weights(ws, 2)
    scored = runner.invoke(app, ["score", "-v", "2", "--day", "2024-01-03", "-w", str(ws.root)])
    assert scored.exit_code == EXIT_BAD_INPUT
    assert "v2 predicts a non-finite pCTR for 400 of 400 rows of 2024-01-03" in scored.output
    assert not ws.has_scores(2, "2024-01-03")
    with Registry(ws) as registry:
        verdict = run_gate(ws, registry, spec(), 2, 1, "2024-01-03", force=True)
    assert verdict.outcome == GateOutcome.REFUSED and not verdict.forced
    assert verdict.non_finite > 0 and "non-finite pCTR" in verdict.reasons[0]


def test_a_single_step_that_overflows_the_forward_pass_is_caught_too(tmp_path, ws):
    """One batch, one step: the loss was finite before the step, the weights are finite after
    it (1e30), yet the model predicts NaN; the check after training refuses it."""
    files = [write(day_rows(d), tmp_path / f"d{d}.parquet", False) for d in range(2)]
    spec_file = _spec_file(tmp_path, learning_rate="1e30", batch_size=1024)
    assert (
        runner.invoke(
            app, ["ingest", *map(str, files), "-s", spec_file, "-w", str(ws.root)]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["train", "--day", "2024-01-01", "-w", str(ws.root)])
    assert result.exit_code == EXIT_TRAINING_FAILED, result.output
    assert "the trained model predicts a non-finite pCTR" in result.output
    assert not list(ws.models.glob("v*"))
