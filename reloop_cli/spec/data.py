"""The [data] section: what a raw log row holds and which columns play which role."""

from __future__ import annotations

from dataclasses import dataclass

from reloop_cli.errors import BadInput
from reloop_cli.spec.checks import check, is_codec, is_date, is_time_zone
from reloop_cli.spec.serving import duration_seconds

TIME_UNITS = ("auto", "s", "ms", "us", "ns")
LATE_ROW_POLICIES = ("append", "reject")
FORMATS = ("csv", "tsv", "parquet", "libfm")
NUMERIC_TRANSFORMS = ("log", "bucket")
NON_FINITE_POLICIES = ("reject", "missing")
DUPLICATE_POLICIES = ("skip", "reject")


@dataclass(frozen=True)
class DataSpec:
    """What a raw log row holds and which columns play which role."""

    label: str = "label"
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    # Fields holding a list of values (tags): a list column, or a string split at the separator.
    # Each row keeps its first `max_values` known values, whose embeddings are mean-pooled.
    multivalued: tuple[str, ...] = ()
    multivalued_separator: str = "|"
    max_values: int = 8
    # "log": sign(x)*log1p(|x|) scales a per-field vector; "bucket": Criteo's floor(log(x)^2) bins.
    numeric_transform: str = "log"
    format: str | None = None  # None: chosen from each file's extension
    columns: tuple[str, ...] = ()  # CSV/TSV without a header line: the column names, in order
    time_column: str | None = None
    time_format: str | None = None  # strftime pattern for string times; None: numbers or ISO-8601
    time_unit: str = "auto"  # epoch numbers: s | ms | us | ns | auto (from their magnitude)
    timezone: str = "UTC"  # whose midnight ends a day (IANA name); fixed per workspace
    source_timezone: str = "UTC"  # zone of times written without one (naive timestamps/strings)
    min_date: str = "1990-01-01"  # rows dated outside [min_date, max_date] are bad rows
    max_date: str | None = None  # None: the day after today (in `timezone`) at ingest time
    late_rows: str = "append"  # rows of a day already ingested: append | reject
    # NaN / inf / -inf in a numeric field: a bad row ("reject"), or an empty cell ("missing")
    non_finite: str = "reject"
    # a row whose impression id the workspace holds for its day already: "skip" it (counted),
    # or "reject" the batch; only with data.impression_id (rows without one are keyed by content)
    duplicate_impressions: str = "skip"
    # a click counts for its impression when it arrives within this long of it ("30m", "2h")
    attribution_window: str = "30m"
    encoding: str = "utf-8"  # of CSV/TSV/libfm text
    impression_id: str | None = None
    pctr: str | None = None  # the served model's logged prediction, if the logs carry it
    request_id: str | None = None  # which request (slate) an impression belonged to
    propensity: str | None = None  # the probability the serving policy gave the shown item
    oracle: str | None = None  # true click probability (simulated data only); never trained on
    start_date: str = "2024-01-01"  # first pseudo-day for logs without a time column
    max_reject_fraction: float = 0.0  # 0: any bad row fails the ingest

    def validate(self) -> None:
        check(
            bool(self.categorical or self.numeric or self.multivalued),
            "data",
            "no categorical, numeric or multivalued fields",
        )
        check(self.max_values >= 1, "data.max_values", "must be >= 1")
        check(bool(self.multivalued_separator), "data.multivalued_separator", "must not be empty")
        check(self.format is None or self.format in FORMATS, "data.format", f"one of {FORMATS}")
        check(
            self.numeric_transform in NUMERIC_TRANSFORMS,
            "data.numeric_transform",
            f"must be one of {NUMERIC_TRANSFORMS}",
        )
        check(0.0 <= self.max_reject_fraction <= 1.0, "data.max_reject_fraction", "not in [0, 1]")
        _check_one_role_per_column(self)
        check(self.time_unit in TIME_UNITS, "data.time_unit", f"one of {TIME_UNITS}")
        check(self.late_rows in LATE_ROW_POLICIES, "data.late_rows", f"one of {LATE_ROW_POLICIES}")
        check(
            self.non_finite in NON_FINITE_POLICIES,
            "data.non_finite",
            f"one of {NON_FINITE_POLICIES}",
        )
        try:
            window = duration_seconds(self.attribution_window)
        except ValueError:
            window = -1.0
        check(window > 0, "data.attribution_window", f"'{self.attribution_window}' is not like 30m")
        check(
            self.duplicate_impressions in DUPLICATE_POLICIES,
            "data.duplicate_impressions",
            f"one of {DUPLICATE_POLICIES}",
        )
        for key in ("timezone", "source_timezone"):
            zone = getattr(self, key)
            check(is_time_zone(zone), f"data.{key}", f"'{zone}' is not an IANA time zone name")
        for key in ("min_date", "max_date", "start_date"):
            value = getattr(self, key)
            check(value is None or is_date(value), f"data.{key}", f"'{value}' is not YYYY-MM-DD")
        if self.max_date is not None:
            check(self.min_date <= self.max_date, "data.max_date", "is before data.min_date")
        check(is_codec(self.encoding), "data.encoding", f"'{self.encoding}' is not an encoding")

    @property
    def feature_fields(self) -> tuple[str, ...]:
        return (*self.categorical, *self.numeric, *self.multivalued)


def _check_one_role_per_column(data: DataSpec) -> None:
    """Each column plays one role; a column named twice is refused with both roles named."""
    roles: dict[str, str] = {}
    listed = [
        ("label", (data.label,)),
        ("categorical", data.categorical),
        ("numeric", data.numeric),
        ("multivalued", data.multivalued),
        ("time_column", (data.time_column,) if data.time_column else ()),
        ("impression_id", (data.impression_id,) if data.impression_id else ()),
        ("pctr", (data.pctr,) if data.pctr else ()),
        ("request_id", (data.request_id,) if data.request_id else ()),
        ("propensity", (data.propensity,) if data.propensity else ()),
        ("oracle", (data.oracle,) if data.oracle else ()),
    ]
    for role, columns in listed:
        for column in columns:
            if column in roles:
                first = roles[column]
                where = f"twice in {role}" if first == role else f"as both {first} and {role}"
                raise BadInput(f"data: column '{column}' is named {where}; give it one role")
            roles[column] = role
