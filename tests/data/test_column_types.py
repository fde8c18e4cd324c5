"""A column whose type drifts between days keeps its meaning: an integer written as a float is the
same value, another encoding is refused, and `reloop run` warns when a day's values are all new."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.data import column_types
from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from reloop_cli.features.novelty import novelty
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import train_version
from reloop_cli.versions.score import score_day
from tests.helpers import Feed, workspace_files, write_spec


def as_floats(path, out, column="position", nulls: int = 5):
    """The day written as an upstream job that allows nulls writes it: the column as floats."""
    day = pl.read_parquet(path).with_columns(pl.col(column).cast(pl.Float64))
    day = day.with_columns(
        pl.when(pl.int_range(pl.len()) < nulls).then(None).otherwise(pl.col(column)).alias(column)
    )
    day.write_parquet(out)
    return out


def test_an_integer_column_written_as_floats_scores_as_before(tmp_path, sample_spec, tiny_logs):
    ints, floats = Workspace(tmp_path / "ints"), Workspace(tmp_path / "floats")
    drifted = as_floats(tiny_logs[2], tmp_path / "clicks-2024-01-03.parquet", nulls=0)
    for ws, third in ((ints, tiny_logs[2]), (floats, drifted)):
        ingest(ws, sample_spec, [*tiny_logs[:2], third])
        with Registry(ws) as registry:
            train_version(ws, registry, sample_spec, "2024-01-02")
        score_day(ws, 1, "2024-01-03")
    assert set(floats.scan_logs(["2024-01-03"]).collect()["position"]) <= {
        str(p) for p in range(1, 11)
    }
    same = ints.scan_scores(1, "2024-01-03").collect()
    assert floats.scan_scores(1, "2024-01-03").collect().equals(same)
    assert column_types.load(floats)["position"].kind == "integer"


def test_integral_float_text_reads_as_its_integer_and_nulls_stay_null(
    tmp_path, ws, sample_spec, tiny_logs
):
    ingest(ws, sample_spec, tiny_logs[:1])
    text = pl.read_parquet(tiny_logs[1]).with_columns(
        pl.format("{}.0", pl.col("position")).alias("position")
    )
    csv = tmp_path / "clicks-2024-01-02.csv"
    text.write_csv(csv)
    ingest(ws, sample_spec, [csv])
    positions = ws.scan_logs(["2024-01-02"]).collect()["position"]
    assert positions.to_list() == [
        str(p) for p in text["position"].str.replace(".0", "", literal=True)
    ]
    drifted = as_floats(tiny_logs[2], tmp_path / "d3.parquet", nulls=5)
    ingest(ws, sample_spec, [drifted])
    stored = ws.scan_logs(["2024-01-03"]).collect()["position"]
    assert stored.null_count() == 5 and set(stored.drop_nulls()) <= {str(p) for p in range(1, 11)}


def test_a_column_whose_values_changed_encoding_is_refused(tmp_path, ws, sample_spec, tiny_logs):
    ingest(ws, sample_spec, tiny_logs[:1])
    day = pl.read_parquet(tiny_logs[1])
    codes = {"mobile": 0, "desktop": 1, "tablet": 2}
    recoded = day.with_columns(pl.col("device").replace_strict(codes, return_dtype=pl.Int64))
    path = tmp_path / "recoded.parquet"
    recoded.write_parquet(path)
    before = workspace_files(ws)
    with pytest.raises(BadInput) as refused:
        ingest(ws, sample_spec, [path])
    message = str(refused.value)
    assert f"{path}: categorical field 'device' held text" in message
    assert "now holds numbers" in message and "another encoding" in message
    assert workspace_files(ws) == before


def test_new_values_are_measured_per_field_and_a_jump_is_flagged(
    tmp_path, ws, sample_spec, tiny_logs
):
    ingest(ws, sample_spec, tiny_logs[:2])
    steady = novelty(ws, sample_spec, "2024-01-02")
    assert steady["device"].share == 0.0 and not steady["device"].jumped
    renamed = pl.read_parquet(tiny_logs[2]).with_columns(
        pl.format("v2-{}", pl.col("item_id")).alias("item_id")
    )
    path = tmp_path / "renamed.parquet"
    renamed.write_parquet(path)
    ingest(ws, sample_spec, [path])
    report = novelty(ws, sample_spec, "2024-01-03")
    assert report["item_id"].share == 1.0 and report["item_id"].jumped
    assert not report["user_id"].jumped


def test_a_cron_cycle_warns_when_a_fields_values_are_all_new(tmp_path, tiny_logs):
    ws, feed = tmp_path / "ws", Feed(tiny_logs, tmp_path / "drop")
    spec = write_spec(tmp_path, "spec")
    runner = CliRunner()
    run = ["run", "--spec", str(spec), "--logs", str(feed.folder), "-w", str(ws), "--json"]
    feed.arrive(2)
    assert runner.invoke(app, run).exit_code == 0
    renamed = pl.read_parquet(tiny_logs[2]).with_columns(
        pl.format("v2-{}", pl.col("item_id")).alias("item_id")
    )
    renamed.write_parquet(feed.folder / tiny_logs[2].name)
    result = runner.invoke(app, run)
    payload = json.loads(result.stdout)
    assert payload["new_values"]["item_id"]["jumped"] is True
    assert any(
        w.startswith("item_id: 100% of the day's values are new")
        for w in payload["novelty_warnings"]
    )
    assert payload["new_values"]["device"]["share"] == 0.0
