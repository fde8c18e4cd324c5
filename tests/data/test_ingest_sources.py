"""Logs as real systems write them: Hive folders, compressed and Latin-1 text, ragged rows, late
rows under both policies, and refusals that leave nothing behind."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.data.ingest import ingest
from reloop_cli.errors import EXIT_BAD_INPUT, BadInput
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.store.workspace import Workspace
from tests.helpers import REPO

DATED = spec_from_dict(
    {"data": {"label": "click", "categorical": ["site"], "time_column": "ts"}}, "dated.toml"
)
UNDATED = spec_from_dict({"data": {"label": "click", "categorical": ["site"]}}, "plain.toml")
DAY = 86_400
JAN_1 = 1_704_067_200  # 2024-01-01T00:00:00Z


def dated_csv(path, day_offsets: list[int], rows_per_day: int = 10, site: str = "s"):
    lines = ["ts,site,click"]
    for offset in day_offsets:
        lines += [
            f"{JAN_1 + offset * DAY + 60 * i},{site}{i % 3},{i % 2}" for i in range(rows_per_day)
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_hive_folder_is_read_with_its_partition_as_a_column(tmp_path):
    root = tmp_path / "logs"
    for day in ("2024-03-01", "2024-03-02"):
        folder = root / f"dt={day}"
        folder.mkdir(parents=True)
        # The same part file under both days: different rows all the same.
        pl.DataFrame({"site": ["a", "b", "c"], "click": [0, 1, 0]}).write_parquet(
            folder / "part-0.parquet"
        )
        (folder / "_SUCCESS").write_text("")
    (root / "dt=2024-03-01" / ".part-0.parquet.crc").write_text("x")
    spec = spec_from_dict(
        {"data": {"label": "click", "categorical": ["site"], "time_column": "dt"}}, "hive.toml"
    )
    ws = Workspace(tmp_path / "ws")
    result = ingest(ws, spec, [root])
    assert result.rows_per_day == {"2024-03-01": 3, "2024-03-02": 3}
    ids = ws.scan_logs(ws.days()).collect()["impression_id"]
    assert ids.n_unique() == 6  # identical files under two partitions are distinct rows
    assert ingest(ws, spec, [root]).rows == 0  # and each is recognised the second time


def test_an_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match=r"empty: folder holds no data files"):
        ingest(Workspace(tmp_path / "ws"), DATED, [tmp_path / "empty"])


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.zst", ".libfm.gz"])
def test_compressed_text_is_read_by_the_name_under_the_compression_suffix(tmp_path, suffix):
    if suffix.startswith(".libfm"):
        spec = spec_from_dict({"data": {"format": None, "categorical": ["u", "i"]}}, "fm.toml")
        text = b"1 3:1 10:1\n-1 4:1 11:1\n0 5:1 12:1\n"
    else:
        spec, text = UNDATED, b"click,site\n1,a\n0,b\n0,c\n"
    path = tmp_path / f"log{suffix}"
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(text))
    else:
        with pa.CompressedOutputStream(str(path), "zstd") as out:
            out.write(text)
    assert ingest(Workspace(tmp_path / "ws"), spec, [path], days=1).rows == 3


def test_latin1_text_needs_its_encoding_named(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes("click,site\n1,café\n0,crème\n".encode("latin-1"))
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(BadInput) as refused:
        ingest(ws, UNDATED, [path])
    assert str(refused.value) == (
        f"{path}: not valid utf-8 text in column 'site'; set data.encoding to the file's "
        'encoding (e.g. "latin-1" or "cp1252")'
    )
    assert not ws.root.exists()
    latin = spec_from_dict({"data": {**UNDATED.to_dict()["data"], "encoding": "latin-1"}}, "l.toml")
    ingest(ws, latin, [path])
    assert ws.scan_logs(ws.days()).collect()["site"].to_list() == ["café", "crème"]


def test_a_ragged_row_says_how_many_fields_it_has(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("click,site,extra\n1,a,x\n0,b\n1,c,y\n")
    spec = spec_from_dict({"data": {"label": "click", "categorical": ["site"]}}, "r.toml")
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(
        BadInput, match=r"log\.csv: row 2: row has 2 fields, the header has 3: '0,b'"
    ):
        ingest(ws, spec, [path])
    lenient = spec_from_dict(
        {"data": {"label": "click", "categorical": ["site"], "max_reject_fraction": 0.5}}, "r.toml"
    )
    result = ingest(ws, lenient, [path])
    assert (result.rows, result.rejected) == (2, 1)
    kept = ws.scan_logs(ws.days()).collect()
    assert kept["site"].to_list() == ["a", "c"]
    assert kept["impression_id"].str.split(":").list.last().to_list() == ["1", "3"]
    (reject,) = pl.read_parquet(next(ws.rejects.rglob("*.parquet"))).iter_rows(named=True)
    assert (reject["source_row"], reject["reject_reason"]) == (
        2,
        "row has 2 fields, the header has 3: '0,b'",
    )


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"categorical": ["ts"], "time_column": "ts"},
            "data: column 'ts' is named as both categorical and time_column; give it one role",
        ),
        (
            {"categorical": ["a", "a"]},
            "data: column 'a' is named twice in categorical; give it one role",
        ),
        (
            {"categorical": ["a"], "label": "a"},
            "data: column 'a' is named as both label and categorical; give it one role",
        ),
    ],
)
def test_a_column_in_two_roles_is_named_with_both(data, message):
    with pytest.raises(BadInput) as refused:
        spec_from_dict({"data": data}, "s.toml")
    assert str(refused.value) == f"s.toml: {message}"


def test_a_refused_ingest_leaves_no_path_behind(tmp_path):
    before = sorted(tmp_path.iterdir())
    target = tmp_path / "new" / "nested" / "ws"
    result = CliRunner().invoke(
        app,
        [
            *["ingest", str(tmp_path / "gone.csv"), "-w", str(target)],
            *["--spec", str(REPO / "pipelines" / "sample.toml")],
        ],
    )
    assert result.exit_code == EXIT_BAD_INPUT
    assert "gone.csv: file not found" in result.output
    assert sorted(tmp_path.iterdir()) == before


def test_the_time_zone_of_a_workspace_cannot_change(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ingest(ws, DATED, [dated_csv(tmp_path / "a.csv", [0])])
    tokyo = spec_from_dict(
        {"data": {**DATED.to_dict()["data"], "timezone": "Asia/Tokyo"}}, "t.toml"
    )
    before = sorted(p for p in ws.root.rglob("*"))
    with pytest.raises(BadInput) as refused:
        ingest(ws, tokyo, [dated_csv(tmp_path / "b.csv", [1])])
    assert "data.timezone 'Asia/Tokyo' differs from 'UTC', the zone this workspace's days" in str(
        refused.value
    )
    assert sorted(p for p in ws.root.rglob("*")) == before


def test_late_rows_are_appended_as_a_new_part_and_counted(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ingest(ws, DATED, [dated_csv(tmp_path / "d1.csv", [0, 1])])
    late_file = dated_csv(tmp_path / "d2.csv", [1, 2], rows_per_day=4, site="late")
    result = ingest(ws, DATED, [late_file])
    assert result.late_rows == {"2024-01-02": 4}
    assert result.rows_per_day == {"2024-01-02": 4, "2024-01-03": 4}
    assert len(list(ws.log_dir("2024-01-02").glob("*.parquet"))) == 2
    assert ws.scan_logs(["2024-01-02"]).select(pl.len()).collect().item() == 14
    (manifest,) = [
        json.loads(p.read_text())
        for p in (ws.logs / "_manifest").glob("*.json")
        if str(late_file) in p.read_text()
    ]
    assert manifest["late_rows"] == {"2024-01-02": 4} and manifest["ingested_at"]
    again = ingest(ws, DATED, [late_file])
    assert again.skipped == [str(late_file)] and again.rows == 0
    assert ws.scan_logs(["2024-01-02"]).select(pl.len()).collect().item() == 14


def test_late_rows_are_rejected_with_their_reason_under_reject(tmp_path):
    ws = Workspace(tmp_path / "ws")
    strict = spec_from_dict({"data": {**DATED.to_dict()["data"], "late_rows": "reject"}}, "s.toml")
    ingest(ws, strict, [dated_csv(tmp_path / "d1.csv", [0, 1])])
    result = ingest(ws, strict, [dated_csv(tmp_path / "d2.csv", [1, 2], rows_per_day=4)])
    assert (result.rows, result.rejected, result.late_rows) == (4, 4, {"2024-01-02": 4})
    assert ws.scan_logs(["2024-01-02"]).select(pl.len()).collect().item() == 10
    reasons = pl.read_parquet(ws.rejects / "day=2024-01-02" / "*.parquet")["reject_reason"]
    assert set(reasons) == {
        'late: day 2024-01-02 was ingested before this file (data.late_rows = "reject")'
    }


def test_a_cron_cycle_says_which_trained_day_gained_late_rows(tmp_path, tiny_logs):
    from tests.helpers import write_spec

    spec_file = write_spec(tmp_path, "spec")
    drop = tmp_path / "drop"
    drop.mkdir()
    runner = CliRunner()

    def cycle(*extra):
        return runner.invoke(
            app,
            [
                "run",
                "--spec",
                str(spec_file),
                "--logs",
                str(drop),
                "-w",
                str(tmp_path / "ws"),
                *extra,
            ],
        )

    for path in tiny_logs[:2]:
        (drop / path.name).write_bytes(path.read_bytes())
    assert cycle().exit_code == 0
    late = pl.read_parquet(tiny_logs[0]).head(50).with_columns(pl.col("impression_id") + "-late")
    late.write_parquet(drop / "late-2024-01-01.parquet")
    result = cycle("--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["late_rows"] == {"2024-01-01": 50}
    assert report["changed_trained_days"] == {"2024-01-01": [1]}
    assert report["outcome"] == "nothing-new"
    late.with_columns(pl.col("impression_id") + "2").write_parquet(drop / "late-again.parquet")
    text = cycle().stdout
    assert "2024-01-01: 50 late row(s) appended; trained on by v1, not retrained" in text


def test_a_cron_cycle_reads_each_new_file_once(tmp_path, tiny_logs, monkeypatch):
    """The nightly cycle takes its day from the workspace after ingesting, rather than reading
    every new file once to plan and again to ingest; a backfill (`--day`) still checks first."""
    from reloop_cli.data import ingest as ingest_module
    from tests.helpers import write_spec

    reads: list[str] = []
    read_one = ingest_module._load_one

    def counted(source, spec, today, forms):
        reads.append(source.path.name)
        return read_one(source, spec, today, forms)

    monkeypatch.setattr(ingest_module, "_load_one", counted)
    spec_file = write_spec(tmp_path, "spec")
    drop = tmp_path / "drop"
    drop.mkdir()
    for path in tiny_logs[:2]:
        (drop / path.name).write_bytes(path.read_bytes())
    args = ["run", "--spec", str(spec_file), "--logs", str(drop), "-w", str(tmp_path / "ws")]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["day"] == "2024-01-02"
    assert sorted(reads) == sorted(p.name for p in tiny_logs[:2])
    reads.clear()
    (drop / tiny_logs[2].name).write_bytes(tiny_logs[2].read_bytes())
    refused = CliRunner().invoke(app, [*args, "--day", "2024-01-09"])
    assert (
        refused.exit_code == EXIT_BAD_INPUT
        and "day 2024-01-09: no logs for that day" in refused.output
    )
    assert reads == [tiny_logs[2].name]  # read to check the day, and nothing ingested
    assert not (tmp_path / "ws" / "logs" / "day=2024-01-03").exists()


@pytest.mark.parametrize(
    "spec_name,header,row,days",
    [
        (
            "kuaivideo",
            "timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items",
            lambda i: f"{1_500_000_000 + 4_000 * i},{i % 7},{i % 11},{i % 2},0,0,1^2^3,4^5",
            None,
        ),
        (
            "amazonelectronics",
            "label,user_id,item_id,cate_id,item_history,cate_history",
            lambda i: f"{i % 2},{i % 7},{i % 11},{i % 3},1^2^3,4^5",
            2,
        ),
    ],
)
def test_the_bars_specs_read_the_files_bars_converters_write(
    tmp_path, spec_name, header, row, days
):
    """Made-up rows in the layout of BARS's converters (the data sets themselves may not be
    copied): the shipped specs read them, tags split on "^"."""
    from reloop_cli.data.ingest import ingest
    from reloop_cli.spec.pipeline import load_spec
    from reloop_cli.store.workspace import Workspace

    path = tmp_path / "train.csv"
    path.write_text("\n".join([header, *(row(i) for i in range(40))]) + "\n", encoding="utf-8")
    spec = load_spec(REPO / "pipelines" / f"{spec_name}.toml")
    ws = Workspace(tmp_path / "ws")
    result = ingest(ws, spec, [path], days=days)
    assert result.rows == 40 and result.rejected == 0
    held = ws.scan_logs(ws.days()).collect()
    tags = held[spec.data.multivalued[0]].to_list()
    assert tags[0] == ["1", "2", "3"]
