"""Time columns of every type land rows on the right day, in the workspace's time zone."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reloop_cli.data.ingest import ingest
from reloop_cli.data.timestamps import infer_unit
from reloop_cli.errors import BadInput
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.store.workspace import Workspace

START = datetime(2024, 3, 1, tzinfo=timezone.utc)
# 50 instants 97 minutes apart: three and a half days, every hour of the day visited.
INSTANTS = [START + timedelta(minutes=97 * i, seconds=i, microseconds=1_000 * i) for i in range(50)]
EPOCH = [int(t.timestamp()) for t in INSTANTS]


def spec(**data):
    settings = {"label": "click", "categorical": ["u"], "time_column": "t", **data}
    return spec_from_dict({"data": settings}, "t.toml")


def naive_utc(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(tzinfo=None)


def parquet(path, values: pa.Array):
    table = pa.table(
        {"t": values, "u": [f"u{i % 3}" for i in range(50)], "click": [i % 2 for i in range(50)]}
    )
    pq.write_table(table, path)
    return path


def csv(path, values: list[str]):
    lines = ["t,u,click", *(f"{v},u{i % 3},{i % 2}" for i, v in enumerate(values))]
    path.write_text("\n".join(lines) + "\n")
    return path


def micros(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


# name -> (writer, whether each value is a calendar day rather than an instant)
FORMS = {
    "timestamp[ms]": (
        lambda p: parquet(p, pa.array([naive_utc(t) for t in INSTANTS], pa.timestamp("ms"))),
        False,
    ),
    "timestamp[us]": (
        lambda p: parquet(p, pa.array([naive_utc(t) for t in INSTANTS], pa.timestamp("us"))),
        False,
    ),
    "timestamp[ns]": (
        lambda p: parquet(p, pa.array([micros(t) * 1000 for t in INSTANTS], pa.timestamp("ns"))),
        False,
    ),
    "timestamp[ms, UTC]": (
        lambda p: parquet(p, pa.array(INSTANTS, pa.timestamp("ms", tz="UTC"))),
        False,
    ),
    "timestamp[us, +09:00]": (
        lambda p: parquet(
            p, pa.array([micros(t) for t in INSTANTS], pa.timestamp("us", tz="+09:00"))
        ),
        False,
    ),
    "date": (lambda p: parquet(p, pa.array([t.date() for t in INSTANTS], pa.date32())), True),
    "int64 s": (lambda p: parquet(p, pa.array(EPOCH, pa.int64())), False),
    "int64 ms": (
        lambda p: parquet(p, pa.array([micros(t) // 1000 for t in INSTANTS], pa.int64())),
        False,
    ),
    "int64 us": (lambda p: parquet(p, pa.array([micros(t) for t in INSTANTS], pa.int64())), False),
    "int64 ns": (
        lambda p: parquet(p, pa.array([micros(t) * 1000 for t in INSTANTS], pa.int64())),
        False,
    ),
    "CSV epoch seconds": (lambda p: csv(p, [str(s) for s in EPOCH]), False),
    "ISO T and Z": (lambda p: csv(p, [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in INSTANTS]), False),
    "ISO space, fraction, offset": (
        lambda p: csv(p, [t.isoformat(sep=" ") for t in INSTANTS]),
        False,
    ),
    "ISO +09:00": (
        lambda p: csv(p, [t.astimezone(ZoneInfo("Asia/Tokyo")).isoformat() for t in INSTANTS]),
        False,
    ),
    "ISO without offset": (lambda p: csv(p, [naive_utc(t).isoformat() for t in INSTANTS]), False),
    "ISO bare date": (lambda p: csv(p, [t.date().isoformat() for t in INSTANTS]), True),
}


def expected_days(zone: str, calendar: bool) -> Counter:
    if calendar:
        return Counter(t.date().isoformat() for t in INSTANTS)
    return Counter(t.astimezone(ZoneInfo(zone)).date().isoformat() for t in INSTANTS)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
@pytest.mark.parametrize("form", list(FORMS))
def test_every_time_type_lands_the_same_rows_on_the_same_days(tmp_path, form, zone):
    write, calendar = FORMS[form]
    path = write(
        tmp_path / ("log.parquet" if "ISO" not in form and "CSV" not in form else "log.csv")
    )
    result = ingest(Workspace(tmp_path / "ws"), spec(timezone=zone), [path])
    assert result.rows == 50 and result.rejected == 0
    assert Counter(result.rows_per_day) == expected_days(zone, calendar)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
def test_a_custom_time_format_lands_on_the_same_days(tmp_path, zone):
    path = csv(tmp_path / "log.csv", [naive_utc(t).strftime("%d/%m/%Y %H:%M:%S") for t in INSTANTS])
    result = ingest(
        Workspace(tmp_path / "ws"), spec(timezone=zone, time_format="%d/%m/%Y %H:%M:%S"), [path]
    )
    assert Counter(result.rows_per_day) == expected_days(zone, calendar=False)


def test_stored_time_is_the_utc_epoch_second(tmp_path):
    path = FORMS["timestamp[us, +09:00]"][0](tmp_path / "log.parquet")
    ws = Workspace(tmp_path / "ws")
    ingest(ws, spec(timezone="Asia/Tokyo"), [path])
    stored = ws.scan_logs(ws.days()).collect().sort("ts")
    assert stored["ts"].to_list() == EPOCH


def test_auto_unit_is_inferred_from_magnitude_and_said():
    assert [infer_unit(m) for m in (1.7e9, 1.7e12, 1.7e15, 1.7e18, None)] == [
        "s",
        "ms",
        "us",
        "ns",
        "s",
    ]


def test_the_summary_says_which_unit_auto_took(tmp_path):
    path = FORMS["int64 ms"][0](tmp_path / "log.parquet")
    result = ingest(Workspace(tmp_path / "ws"), spec(), [path])
    assert any("epoch milliseconds (inferred from their magnitude" in n for n in result.time_notes)


@pytest.mark.parametrize(
    "local_day,hours", [("2024-03-31", 23), ("2024-10-27", 25)], ids=["spring", "autumn"]
)
def test_a_daylight_saving_day_gets_all_its_rows_and_none_of_its_neighbours(
    tmp_path, local_day, hours
):
    berlin = ZoneInfo("Europe/Berlin")
    day = date.fromisoformat(local_day)
    # Real 10-minute steps: arithmetic on UTC datetimes (on zoned ones Python adds wall-clock time).
    midnight = datetime(day.year, day.month, day.day, tzinfo=berlin).astimezone(timezone.utc)
    first = midnight - timedelta(hours=6)
    instants = [first + timedelta(minutes=10 * i) for i in range(6 * (hours + 12))]
    path = tmp_path / "log.csv"
    path.write_text("t,u,click\n" + "".join(f"{int(t.timestamp())},u,0\n" for t in instants))
    result = ingest(Workspace(tmp_path / "ws"), spec(timezone="Europe/Berlin"), [path])
    expected = Counter(t.astimezone(berlin).date().isoformat() for t in instants)
    assert result.rows_per_day == dict(expected)
    assert result.rows_per_day[local_day] == 6 * hours  # a 23- or 25-hour day, every row of it
    assert result.rows_per_day[(day - timedelta(days=1)).isoformat()] == 6 * 6
    assert result.rows_per_day[(day + timedelta(days=1)).isoformat()] == 6 * 6


def test_naive_times_in_a_source_zone_are_its_wall_clock(tmp_path):
    path = csv(tmp_path / "log.csv", ["2024-03-01 23:30:00", "2024-03-02 08:30:00"] * 25)
    result = ingest(
        Workspace(tmp_path / "ws"),
        spec(timezone="Asia/Tokyo", source_timezone="Asia/Tokyo"),
        [path],
    )
    assert result.rows_per_day == {"2024-03-01": 25, "2024-03-02": 25}


def test_milliseconds_read_as_seconds_are_refused_with_the_date_and_a_hint(tmp_path):
    path = FORMS["int64 ms"][0](tmp_path / "log.parquet")
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(BadInput) as refused:
        ingest(ws, spec(time_unit="s"), [path])
    message = str(refused.value)
    first_ms = micros(INSTANTS[0]) // 1000
    assert re.match(
        rf"{re.escape(str(path))}: row 1: time '{first_ms}' is \+56134-\d\d-\d\d, ", message
    )
    assert "outside the plausible days 1990-01-01.." in message
    assert 'looks like milliseconds: set data.time_unit = "ms"' in message
    assert not ws.root.exists()


def test_out_of_window_rows_within_the_allowance_go_to_rejects(tmp_path):
    values = [str(s) for s in EPOCH[:48]] + ["-86400", "20240301"]
    path = csv(tmp_path / "log.csv", values)
    ws = Workspace(tmp_path / "ws")
    result = ingest(ws, spec(max_reject_fraction=0.05), [path])
    assert (result.rows, result.rejected) == (48, 2)
    rejects = pl.read_parquet(ws.rejects / "day=1969-12-31" / "*.parquet")
    assert rejects["reject_reason"][0].startswith("time '-86400' is 1969-12-31, outside")
    (hinted,) = pl.read_parquet(ws.rejects / "day=1970-08-23" / "*.parquet")["reject_reason"]
    assert 'looks like a YYYYMMDD date: set data.time_format = "%Y%m%d"' in hinted


def test_a_max_date_in_the_past_refuses_newer_rows(tmp_path):
    path = FORMS["int64 s"][0](tmp_path / "log.parquet")
    with pytest.raises(BadInput, match=r"outside the plausible days 1990-01-01\.\.2024-03-02"):
        ingest(Workspace(tmp_path / "ws"), spec(max_date="2024-03-02"), [path])


def test_unparseable_time_names_the_row(tmp_path):
    path = csv(tmp_path / "log.csv", [INSTANTS[0].isoformat(), "yesterday"] + ["2024-03-01"] * 48)
    with pytest.raises(BadInput, match=r"log\.csv: row 2: time 'yesterday' not parseable"):
        ingest(Workspace(tmp_path / "ws"), spec(), [path])


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"timezone": "Mars/Olympus"}, "data.timezone: 'Mars/Olympus' is not an IANA time zone"),
        ({"time_unit": "days"}, "data.time_unit: one of"),
        ({"min_date": "2024-13-01"}, "data.min_date: '2024-13-01' is not YYYY-MM-DD"),
        ({"late_rows": "drop"}, "data.late_rows: one of"),
        ({"encoding": "klingon"}, "data.encoding: 'klingon' is not an encoding"),
    ],
)
def test_bad_time_settings_are_refused_by_name(settings, message):
    with pytest.raises(BadInput, match=message):
        spec(**settings)


def test_a_column_mixing_iso_forms_dates_and_epochs_reads_each_row_by_what_it_holds(tmp_path):
    values = ["2024-03-01T23:30:00Z"] * 30 + [
        "2024-03-02 08:00:00+09:00",  # 2024-03-01T23:00Z
        "2024-03-02T01:00:00",  # naive: UTC
        "2024-03-03",  # a calendar day
        "1709510400",  # 2024-03-04T00:00Z as epoch seconds
        "1709510400.5",
    ] * 4
    result = ingest(Workspace(tmp_path / "ws"), spec(), [csv(tmp_path / "log.csv", values)])
    assert result.rows_per_day == {
        "2024-03-01": 34,
        "2024-03-02": 4,
        "2024-03-03": 4,
        "2024-03-04": 8,
    }
