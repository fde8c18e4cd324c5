"""The pipeline spec: one TOML file in `pipelines/` says what the logs look like and how to learn.

Every stage reads its settings from a `Spec`; command-line options override single fields through
`Spec.override`, so the same validation runs whichever way a value arrives.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reloop_cli.errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

LOSSES = ("bce", "kd", "reloop")
TIME_UNITS = ("auto", "s", "ms", "us", "ns")
LATE_ROW_POLICIES = ("append", "reject")
FORMATS = ("csv", "tsv", "parquet", "libfm")
NUMERIC_TRANSFORMS = ("log", "bucket")
LAST_SOURCES = ("parent", "served")
MONITORS = ("auc", "logloss", "auc-logloss")
DEVICES = ("auto", "cpu", "cuda")
EMBEDDING_UPDATES = ("auto", "sparse", "dense")
GATE_METRICS = ("auc", "snips_ctr")
L2_ROWS = ("batch-aware", "touched", "all")


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise BadInput(f"{where}: {message}")


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
    encoding: str = "utf-8"  # of CSV/TSV/libfm text
    impression_id: str | None = None
    pctr: str | None = None  # the served model's logged prediction, if the logs carry it
    request_id: str | None = None  # which request (slate) an impression belonged to
    propensity: str | None = None  # the probability the serving policy gave the shown item
    oracle: str | None = None  # true click probability (simulated data only); never trained on
    start_date: str = "2024-01-01"  # first pseudo-day for logs without a time column
    max_reject_fraction: float = 0.0  # 0: any bad row fails the ingest

    def validate(self) -> None:
        _check(
            bool(self.categorical or self.numeric or self.multivalued),
            "data",
            "no categorical, numeric or multivalued fields",
        )
        _check(self.max_values >= 1, "data.max_values", "must be >= 1")
        _check(bool(self.multivalued_separator), "data.multivalued_separator", "must not be empty")
        _check(self.format is None or self.format in FORMATS, "data.format", f"one of {FORMATS}")
        _check(
            self.numeric_transform in NUMERIC_TRANSFORMS,
            "data.numeric_transform",
            f"must be one of {NUMERIC_TRANSFORMS}",
        )
        _check(0.0 <= self.max_reject_fraction <= 1.0, "data.max_reject_fraction", "not in [0, 1]")
        _check_one_role_per_column(self)
        _check(self.time_unit in TIME_UNITS, "data.time_unit", f"one of {TIME_UNITS}")
        _check(self.late_rows in LATE_ROW_POLICIES, "data.late_rows", f"one of {LATE_ROW_POLICIES}")
        for key in ("timezone", "source_timezone"):
            zone = getattr(self, key)
            _check(_is_time_zone(zone), f"data.{key}", f"'{zone}' is not an IANA time zone name")
        for key in ("min_date", "max_date", "start_date"):
            value = getattr(self, key)
            _check(value is None or _is_date(value), f"data.{key}", f"'{value}' is not YYYY-MM-DD")
        if self.max_date is not None:
            _check(self.min_date <= self.max_date, "data.max_date", "is before data.min_date")
        _check(_is_codec(self.encoding), "data.encoding", f"'{self.encoding}' is not an encoding")

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


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except (TypeError, ValueError):
        return False
    return len(text) == 10


def _is_time_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        return False
    return True


def _is_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


@dataclass(frozen=True)
class ModelSpec:
    """Which network and its size; see docs/MODELS.md for what each knob does."""

    name: str = "deepfm"
    embedding_dim: int = 10
    hidden_units: tuple[int, ...] = (64, 64)
    dropout: float = 0.0
    batch_norm: bool = False
    cross_layers: int = 2
    cin_layers: tuple[int, ...] = (16, 16)

    def validate(self) -> None:
        from reloop_cli.models import MODELS

        _check(self.name in MODELS, "model.name", f"'{self.name}' is not one of {sorted(MODELS)}")
        _check(self.embedding_dim > 0, "model.embedding_dim", "must be positive")
        _check(all(h > 0 for h in self.hidden_units), "model.hidden_units", "must be positive")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(self.cross_layers >= 0, "model.cross_layers", "must be >= 0")


@dataclass(frozen=True)
class TrainSpec:
    """How each new version is trained."""

    loss: str = "reloop"
    alpha: float = 0.5
    window_days: int = 3
    epochs: int = 10  # at most; early stopping usually ends sooner
    batch_size: int = 1024
    learning_rate: float = 1e-3
    embedding_l2: float = 0.0
    validation_fraction: float = 0.1  # rows held out for early stopping; 0 = train all epochs
    monitor: str = "auc"  # auc | logloss | auc-logloss, measured on the validation slice
    patience: int = 2  # epochs without improvement before stopping
    plateau_factor: float = 0.1  # learning rate times this when an epoch does not improve
    min_learning_rate: float = 1e-6
    max_grad_norm: float = 0.0  # clip the gradient's global norm to this each step; 0 = off
    seed: int = 0
    warm_start: bool = False
    last_source: str = "parent"
    min_count: int = 1  # a value seen fewer times in a window stays out-of-vocabulary
    device: str = "auto"  # cpu | cuda | auto (cuda when one is visible); nothing needs a GPU
    # How the embedding tables learn: "sparse" updates only the rows a batch touches (RowAdam),
    # "dense" updates every row (Adam); "auto" takes sparse for tables above SPARSE_MIN_ROWS rows.
    embedding_updates: str = "auto"
    # Which rows embedding_l2 regularises (regulariser.py): "batch-aware" (the rows a batch looks
    # up, each weighted by 1 / P(row in a batch)), "touched" (those rows, unweighted) or "all"
    # (every row every step, FuxiCTR's form; dense updates only).
    embedding_l2_rows: str = "batch-aware"

    def validate(self) -> None:
        _check(self.loss in LOSSES, "loss", f"'{self.loss}' is not one of {', '.join(LOSSES)}")
        _check(0.0 <= self.alpha <= 1.0, "alpha", f"{self.alpha} is outside [0, 1]")
        _check(self.window_days >= 1, "train.window_days", "must be >= 1")
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _check(self.embedding_l2 >= 0, "train.embedding_l2", "must be >= 0")
        _check(0 <= self.validation_fraction < 1, "train.validation_fraction", "not in [0, 1)")
        _check(self.monitor in MONITORS, "train.monitor", f"one of {MONITORS}")
        _check(self.patience >= 1, "train.patience", "must be >= 1")
        _check(0 < self.plateau_factor <= 1, "train.plateau_factor", "must be in (0, 1]")
        _check(self.max_grad_norm >= 0, "train.max_grad_norm", "must be >= 0 (0 = no clipping)")
        _check(self.last_source in LAST_SOURCES, "train.last_source", f"one of {LAST_SOURCES}")
        _check(self.min_count >= 1, "train.min_count", "must be >= 1")
        _check(self.device in DEVICES, "train.device", f"one of {DEVICES}")
        _check(
            self.embedding_updates in EMBEDDING_UPDATES,
            "train.embedding_updates",
            f"one of {EMBEDDING_UPDATES}",
        )
        _check(self.embedding_l2_rows in L2_ROWS, "train.embedding_l2_rows", f"one of {L2_ROWS}")
        _check(
            not (self.embedding_l2_rows == "all" and self.embedding_updates == "sparse"),
            "train.embedding_l2_rows",
            '"all" regularises every row every step, which sparse updates never touch; '
            'use "batch-aware" or embedding_updates = "dense"',
        )


@dataclass(frozen=True)
class FieldPolicy:
    """One field's vocabulary rules, resolved from the [vocabulary] section."""

    min_count: int
    max_rows: int  # 0: unbounded
    evict_after_days: int  # 0: never
    hash_buckets: int  # 0: a vocabulary; N: the field hashes into N rows, no vocabulary kept


@dataclass(frozen=True)
class VocabularySpec:
    """How each field's embedding rows live (docs/MODELS.md, "Vocabulary"). Each rule is one
    number for every field or a table naming fields: `max_rows = { user_id = 2000000 }`."""

    min_count: int | dict = 0  # admission: seen at least this often in the window; 0: train's
    max_rows: int | dict = 0  # capacity: keep the most frequent in the window; 0: unbounded
    evict_after_days: int | dict = 0  # drop values not seen for this many days; 0: never
    hash_buckets: dict = field(default_factory=dict)  # field -> rows it hashes into

    def policy(self, name: str, default_min_count: int) -> FieldPolicy:
        def pick(rule: int | dict) -> int:
            return int(rule.get(name, 0) if isinstance(rule, dict) else rule)

        return FieldPolicy(
            pick(self.min_count) or default_min_count,
            pick(self.max_rows),
            pick(self.evict_after_days),
            int(self.hash_buckets.get(name, 0)),
        )

    def validate(self, fields: tuple[str, ...] = ()) -> None:
        for key in ("min_count", "max_rows", "evict_after_days", "hash_buckets"):
            rule = getattr(self, key)
            where = f"vocabulary.{key}"
            if key == "hash_buckets" or isinstance(rule, dict):
                _check(isinstance(rule, dict), where, "must be a table { field = number }")
                unknown = sorted(set(rule) - set(fields)) if fields else []
                _check(not unknown, where, f"names no categorical field: {', '.join(unknown)}")
                values = list(rule.values())
            else:
                values = [rule]
            _check(
                all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values),
                where,
                "must be whole numbers >= 0",
            )
        for name, buckets in self.hash_buckets.items():
            _check(buckets >= 1, f"vocabulary.hash_buckets.{name}", "must be >= 1")
            kept = [
                key
                for key in ("min_count", "max_rows", "evict_after_days")
                if isinstance(getattr(self, key), dict) and name in getattr(self, key)
            ]
            _check(
                not kept,
                f"vocabulary.hash_buckets.{name}",
                f"a hashed field keeps no vocabulary, so it takes no {', '.join(kept)}",
            )


@dataclass(frozen=True)
class GateSpec:
    """When a candidate may replace the live version."""

    # Non-inferiority: promote when, at `confidence`, the candidate's AUC is not below live's by
    # more than max_auc_drop (the interval's lower end of candidate - live is above -drop) and its
    # Logloss not above live's by more than max_logloss_rise; paired tests on the holdout rows.
    max_auc_drop: float = 0.002
    max_logloss_rise: float = 0.005
    # "auc": the rule above on the holdout rows; "snips_ctr": the candidate's online CTR
    # estimated off-policy from the live policy's logged slates (needs propensities and slates,
    # as `reloop simulate --closed-loop` writes them), not more than max_ctr_drop below live's.
    metric: str = "auc"
    max_ctr_drop: float = 0.002
    confidence: float = 0.95  # level of the two-sided intervals the rule reads
    min_clicks: int = 100  # fewer clicks in the holdout: inconclusive, live keeps serving
    min_auc: float = 0.55  # absolute floors: the only checks for the very first version
    max_logloss: float = 1.0
    holdout_fraction: float = 0.2  # share of the newest day kept out of training to judge on

    def validate(self) -> None:
        _check(self.max_auc_drop >= 0, "gate.max_auc_drop", "must be >= 0")
        _check(self.max_logloss_rise >= 0, "gate.max_logloss_rise", "must be >= 0")
        _check(0 < self.confidence < 1, "gate.confidence", "must be in (0, 1)")
        _check(self.min_clicks >= 0, "gate.min_clicks", "must be >= 0")
        _check(self.metric in GATE_METRICS, "gate.metric", f"one of {GATE_METRICS}")
        _check(self.max_ctr_drop >= 0, "gate.max_ctr_drop", "must be >= 0")
        _check(0 < self.holdout_fraction < 1, "gate.holdout_fraction", "must be in (0, 1)")


@dataclass(frozen=True)
class Spec:
    """A whole pipeline: data layout, model, training and promotion gate."""

    name: str = "pipeline"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    gate: GateSpec = field(default_factory=GateSpec)
    vocabulary: VocabularySpec = field(default_factory=VocabularySpec)
    source: str = "<defaults>"

    def validate(self) -> Spec:
        try:
            for section in (self.data, self.model, self.train, self.gate):
                section.validate()
            bucketised = self.data.numeric if self.data.numeric_transform == "bucket" else ()
            names = (*self.data.categorical, *bucketised, *self.data.multivalued)
            self.vocabulary.validate(names)
            for name in set(self.vocabulary.hash_buckets) & set(self.data.multivalued):
                raise BadInput(
                    f"vocabulary.hash_buckets.{name}: a multivalued field keeps a vocabulary "
                    "of its tags; hash only single-valued fields"
                )
        except BadInput as err:
            raise BadInput(f"{self.source}: {err}") from None
        return self

    def override(self, section: str, **values: Any) -> Spec:
        """A copy with some fields of one section replaced (None means: keep the spec's)."""
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return self
        part = dataclasses.replace(getattr(self, section), **given)
        return dataclasses.replace(self, **{section: part}).validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **{s: dataclasses.asdict(getattr(self, s)) for s in _SECTIONS},
        }


_SECTIONS = {
    "data": DataSpec,
    "model": ModelSpec,
    "train": TrainSpec,
    "gate": GateSpec,
    "vocabulary": VocabularySpec,
}


def _build_section(cls: type, raw: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise BadInput(f"{where}: unknown key '{key}' (known: {', '.join(known)})")
        values[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except TypeError as err:
        raise BadInput(f"{where}: {err}") from None


def spec_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Spec:
    """Build and validate a spec from parsed TOML."""
    unknown = set(raw) - {"name", *_SECTIONS}
    if unknown:
        raise BadInput(f"{source}: unknown section(s) {sorted(unknown)}")
    parts = {
        name: _build_section(cls, raw.get(name, {}), f"{source} [{name}]")
        for name, cls in _SECTIONS.items()
    }
    return Spec(name=raw.get("name", Path(source).stem), source=source, **parts).validate()


ENV_PREFIX = "RELOOP_"


def _env_value(text: str) -> Any:
    """An environment value read as a TOML value (0.3, true, [64, 32], "x"), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    """RELOOP_<SECTION>_<KEY>=value settings, e.g. RELOOP_TRAIN_ALPHA=0.3, by section."""
    found: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        if section in _SECTIONS and key:
            found.setdefault(section, {})[key] = _env_value(text)
    return found


def load_spec(path: str | Path, environ: dict[str, str] | None = None) -> Spec:
    """Read a pipeline spec from TOML; RELOOP_<SECTION>_<KEY> variables override its values.

    Precedence, highest first: command-line options (applied by the caller with
    `Spec.override`), environment variables, the TOML file, the defaults.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: spec file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"{path}: not valid TOML ({err})") from None
    return spec_from_dict(with_environment(raw, environ), str(path))


def with_environment(raw: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """A spec's raw sections with RELOOP_<SECTION>_<KEY> variables laid over them."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for section, values in env_overrides(os.environ if environ is None else environ).items():
        merged.setdefault(section, {}).update(values)
    return merged
