"""The same impression twice is one impression: a re-export that overlaps what a day holds adds
only its new rows, a changed label is reported, and a strict spec refuses the batch."""

from __future__ import annotations

import polars as pl
import pytest

from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from tests.helpers import workspace_files


@pytest.fixture()
def export(tiny_logs, tmp_path):
    """A day's first export (its first 1,000 rows) and the re-export of the whole day (the first
    1,000 again, then 2,000 late rows), as Spark rewrites a partition."""
    day = pl.read_parquet(tiny_logs[0])
    first, again = tmp_path / "part-a.parquet", tmp_path / "part-b.parquet"
    day.head(1_000).write_parquet(first)
    day.write_parquet(again)
    return first, again, day


def test_a_re_export_adds_only_its_new_impressions(ws, sample_spec, export):
    first, again, day = export
    assert ingest(ws, sample_spec, [first]).rows == 1_000
    result = ingest(ws, sample_spec, [again])
    assert result.rows == 2_000 and result.duplicates == {"2024-01-01": 1_000}
    assert result.late_rows == {"2024-01-01": 2_000}  # only the new rows count as late
    held = ws.scan_logs(["2024-01-01"]).collect()
    assert held.height == day.height == held["impression_id"].n_unique()
    before = workspace_files(ws)
    assert ingest(ws, sample_spec, [again]).skipped == [str(again)]  # the same file: nothing
    assert workspace_files(ws) == before
    manifests = [p for p in ws.manifests.glob("*.json") if "duplicates" in p.read_text()]
    assert any('"2024-01-01": 1000' in p.read_text() for p in manifests)


def test_overlapping_files_of_one_ingest_are_one_impression_each(ws, sample_spec, export):
    first, again, day = export
    result = ingest(ws, sample_spec, [first, again])
    assert result.rows == day.height and result.duplicates == {"2024-01-01": 1_000}
    assert ws.scan_logs(["2024-01-01"]).collect().height == day.height


def test_a_duplicate_with_a_changed_label_is_reported_and_the_first_kept(
    ws, sample_spec, export, tmp_path
):
    first, _, day = export
    ingest(ws, sample_spec, [first])
    first_seven = pl.int_range(pl.len()) < 7
    flipped = day.head(1_000).with_columns(
        pl.when(first_seven).then(1 - pl.col("click")).otherwise(pl.col("click")).alias("click")
    )
    changed = tmp_path / "relabelled.parquet"
    flipped.write_parquet(changed)
    result = ingest(ws, sample_spec, [changed])
    assert result.rows == 0 and result.duplicates == {"2024-01-01": 1_000}
    assert result.relabelled == {"2024-01-01": 7}
    held = ws.scan_logs(["2024-01-01"]).collect().sort("impression_id")
    kept = day.head(1_000).sort("impression_id")
    assert held["label"].to_list() == kept["click"].to_list()
    assert len(list(ws.log_dir("2024-01-01").glob("*.parquet"))) == 1  # no empty part added


def test_a_strict_spec_refuses_a_batch_with_held_impressions(ws, sample_spec, export):
    first, again, _ = export
    ingest(ws, sample_spec, [first])
    strict = sample_spec.override("data", duplicate_impressions="reject")
    before = workspace_files(ws)
    with pytest.raises(BadInput, match=r"1,000 impression\(s\) of 2024-01-01 the workspace holds"):
        ingest(ws, strict, [again])
    assert workspace_files(ws) == before
