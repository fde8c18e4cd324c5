"""Ingest: every format, idempotent, pseudo-days, and bad input refused with nothing written."""

from __future__ import annotations

import polars as pl
import pytest

from reloop_cli.columns import IMPRESSION_ID, LABEL, ORACLE
from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from reloop_cli.spec.pipeline import spec_from_dict
from tests.helpers import workspace_files

CSV_SPEC = spec_from_dict(
    {"data": {"label": "clicked", "categorical": ["site", "app"], "numeric": ["price"]}},
    "csv.toml",
)
LIBFM_SPEC = spec_from_dict(
    {"data": {"format": "libfm", "categorical": ["user", "item", "ctx"]}}, "libfm.toml"
)


def write_csv(path, rows, sep=","):
    header = sep.join(["clicked", "site", "app", "price"])
    path.write_text("\n".join([header, *[sep.join(map(str, r)) for r in rows]]) + "\n")
    return path


def good_rows(n=10):
    return [(i % 2, f"s{i % 3}", f"a{i % 4}", 1.5 * i) for i in range(n)]


def test_ingests_bundled_sample_format_by_day(ws, tiny_logs, sample_spec):
    result = ingest(ws, sample_spec, tiny_logs)
    assert result.rows == 4 * 3_000
    assert ws.days() == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    day = ws.scan_logs(["2024-01-02"]).collect()
    assert day.height == 3_000
    assert {IMPRESSION_ID, LABEL, ORACLE, "user_id"} <= set(day.columns)
    assert day[LABEL].is_in([0, 1]).all()


def test_ingesting_the_same_files_twice_adds_no_row(ws, tiny_logs, sample_spec):
    ingest(ws, sample_spec, tiny_logs[:2])
    again = ingest(ws, sample_spec, tiny_logs[:3])
    assert again.skipped == [str(p) for p in tiny_logs[:2]]
    assert ws.scan_logs(ws.days()).select(pl.len()).collect().item() == 3 * 3_000


@pytest.mark.parametrize("sep,suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_csv_and_tsv_without_time_split_into_pseudo_days(ws, tmp_path, sep, suffix):
    path = write_csv(tmp_path / f"log{suffix}", good_rows(10), sep)
    result = ingest(ws, CSV_SPEC, [path], days=3, start_date="2023-05-01")
    assert ws.days() == ["2023-05-01", "2023-05-02", "2023-05-03"]
    assert sum(result.rows_per_day.values()) == 10
    rows = ws.scan_logs(ws.days()).collect()
    ids = rows[IMPRESSION_ID]
    assert ids.n_unique() == 10  # stable ids made from the file's content and row
    assert rows["price"].dtype == pl.Float64


def test_parquet_input(ws, tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {"clicked": [0, 1, 1], "site": ["a", "b", None], "app": ["x", "y", "z"], "price": [1, 2, 3]}
    ).write_parquet(path)
    assert ingest(ws, CSV_SPEC, [path]).rows == 3


def test_libfm_labels_and_indices(ws, tmp_path):
    path = tmp_path / "log.libfm"
    path.write_text("1 3:1 10:1 20:1\n-1 4:1 11:1 20:1\n")
    ingest(ws, LIBFM_SPEC, [path])
    rows = ws.scan_logs(ws.days()).collect()
    assert rows[LABEL].to_list() == [1, 0]
    assert rows["item"].to_list() == ["10", "11"]


def test_frappe_files_ingest(ws, frappe_dir):
    from reloop_cli.spec.pipeline import load_spec
    from tests.helpers import REPO

    spec = load_spec(REPO / "pipelines" / "frappe.toml")
    files = [frappe_dir / "frappe.validation.libfm", frappe_dir / "frappe.test.libfm"]
    result = ingest(ws, spec, files, days=4)
    assert result.rows == 57_722 + 28_860
    rows = ws.scan_logs(ws.days()).collect()
    assert rows[LABEL].mean() == pytest.approx(1 / 3, abs=0.01)  # two negatives per positive


@pytest.mark.parametrize(
    "content,message",
    [
        ("clicked,site,app,price\n1,a,b,1\n2,a,b,1\n", r"bad.csv: row 2: label '2' is not 0 or 1"),
        ("clicked,site,app,price\n1,a,b,1\n,a,b,1\n", r"bad.csv: row 2: label '\(empty\)'"),
        ("clicked,site,app,price\n1,a,b,x\n", r"bad.csv: row 1: numeric field 'price' = 'x'"),
        ("click,site,app,price\n1,a,b,1\n", r"bad.csv: missing label 'clicked'"),
        ("clicked,site,price\n1,a,1\n", r"bad.csv: missing categorical field 'app'"),
        ("", r"bad.csv: file is empty"),
        ("clicked,site,app,price\n", r"bad.csv: file has no rows"),
    ],
)
def test_bad_csv_is_refused_naming_file_and_row_with_nothing_written(
    ws, tmp_path, content, message
):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(BadInput, match=message):
        ingest(ws, CSV_SPEC, [path])
    assert workspace_files(ws) == []


@pytest.mark.parametrize(
    "content,message",
    [
        (
            "1 3:1 10:1 20:1\n1 3:1 10:1\n",
            r"line 2: expected a label and 3 idx:value tokens, found 2",
        ),
        ("1 3:1 10:1 20:1\n1 3:1 10 20:1\n", r"line 2: a feature token is not of the form"),
        ("1 3:1 10:1 20:1\n5 3:1 10:1 20:1\n", r"row 2: label '5' is not 0 or 1"),
    ],
)
def test_malformed_libfm_is_refused_naming_the_line(ws, tmp_path, content, message):
    path = tmp_path / "bad.libfm"
    path.write_text(content)
    with pytest.raises(BadInput, match=message):
        ingest(ws, LIBFM_SPEC, [path])
    assert workspace_files(ws) == []


def test_a_bad_file_in_a_batch_writes_none_of_the_batch(ws, tmp_path):
    good = write_csv(tmp_path / "good.csv", good_rows())
    bad = tmp_path / "bad.csv"
    bad.write_text("clicked,site,app,price\n3,a,b,1\n")
    with pytest.raises(BadInput, match=r"bad\.csv"):
        ingest(ws, CSV_SPEC, [good, bad])
    assert workspace_files(ws) == []


def test_missing_file_is_named(ws, tmp_path):
    with pytest.raises(BadInput, match=r"nope.csv: file not found"):
        ingest(ws, CSV_SPEC, [tmp_path / "nope.csv"])


def test_bad_rows_within_the_allowance_go_to_rejects(ws, tmp_path):
    spec = CSV_SPEC.override("data", max_reject_fraction=0.2)
    path = write_csv(tmp_path / "log.csv", [*good_rows(9), (7, "s", "a", 1.0)])
    result = ingest(ws, spec, [path])
    assert (result.rows, result.rejected) == (9, 1)
    rejects = pl.read_parquet(next(ws.rejects.rglob("*.parquet")))
    assert rejects["reject_reason"].to_list() == ["label '7' is not 0 or 1"]
    assert rejects["source_row"].to_list() == [10]


def test_criteo_style_tsv_without_header_ingests_with_bucketised_counters(ws, tmp_path):
    from reloop_cli.features import vocabulary
    from reloop_cli.features.encoding import encode
    from reloop_cli.spec.pipeline import load_spec
    from tests.helpers import REPO

    spec = load_spec(REPO / "pipelines" / "criteo.toml")
    lines = []
    for i in range(40):
        counters = [str(i * k) if (i + k) % 5 else "" for k in range(13)]
        categoricals = [f"{(i * 7 + k) % 9:08x}" if k % 4 else "" for k in range(26)]
        lines.append("\t".join([str(i % 2), *counters, *categoricals]))
    path = tmp_path / "day_0.tsv"
    path.write_text("\n".join(lines) + "\n")
    assert ingest(ws, spec, [path], days=2).rows == 40
    rows = ws.scan_logs(ws.days())
    vocab, sizes = vocabulary.build(spec.override("train", min_count=1), rows)
    encoded = encode(rows, spec, vocab, sizes).collect()
    assert encoded["I2"].dtype == pl.Int32  # counters became bucket indices
    assert encoded["I2"].n_unique() > 3


def test_avazu_style_csv_is_dated_by_its_hour_column(ws, tmp_path):
    from reloop_cli.spec.pipeline import load_spec
    from tests.helpers import REPO

    spec = load_spec(REPO / "pipelines" / "avazu.toml")
    header = ["id", "click", "hour", *spec.data.categorical]
    rows = [
        [
            str(10_000 + i),
            str(i % 2),
            "141021" + f"{i % 24:02d}" if i < 30 else "14102200",
            *[f"v{(i + k) % 3}" for k in range(len(spec.data.categorical))],
        ]
        for i in range(40)
    ]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    result = ingest(ws, spec, [path])
    assert result.rows_per_day == {"2014-10-21": 30, "2014-10-22": 10}


def test_parallel_ingest_writes_the_same_files_as_serial(tmp_path, tiny_logs, sample_spec):
    from reloop_cli.store.workspace import Workspace

    serial, parallel = Workspace(tmp_path / "serial"), Workspace(tmp_path / "parallel")
    ingest(serial, sample_spec, tiny_logs, jobs=1)
    ingest(parallel, sample_spec, tiny_logs, jobs=2)
    files = sorted(p.relative_to(serial.root) for p in serial.logs.rglob("*.parquet"))
    assert files == sorted(p.relative_to(parallel.root) for p in parallel.logs.rglob("*.parquet"))
    for name in files:
        assert pl.read_parquet(serial.root / name).equals(pl.read_parquet(parallel.root / name))


@pytest.mark.parametrize("jobs", [1, 2])
def test_dated_files_are_staged_so_a_late_bad_file_leaves_nothing(
    ws, tmp_path, tiny_logs, sample_spec, jobs
):
    """Files with a time column are separate batches, each staged on disk as it is validated (so
    memory holds one file); a bad last file must still leave no day, reject or staging file."""
    bad = tmp_path / "bad.parquet"
    pl.read_parquet(tiny_logs[-1]).with_columns(pl.lit(7).alias("click")).write_parquet(bad)
    with pytest.raises(BadInput, match=r"bad\.parquet"):
        ingest(ws, sample_spec, [*tiny_logs[:-1], bad], jobs=jobs)
    assert workspace_files(ws) == []
    assert not any(ws.root.rglob(".tmp-*"))
    ingest(ws, sample_spec, tiny_logs, jobs=jobs)
    assert len(ws.days()) == len(tiny_logs)
    assert not any(ws.root.rglob(".tmp-*"))
