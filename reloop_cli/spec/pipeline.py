"""The pipeline spec: one TOML file in `pipelines/` says what the logs look like and how to learn.

Every stage reads its settings from a `Spec`; command-line options override single fields through
`Spec.override`, so the same validation runs whichever way a value arrives. Settings come from,
highest first: command-line options, RELOOP_<SECTION>_<KEY> variables, the TOML file, defaults.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from reloop_cli.errors import BadInput
from reloop_cli.spec.adapt import REPLACED, AdaptSpec
from reloop_cli.spec.data import DataSpec
from reloop_cli.spec.experiment import ExperimentSpec
from reloop_cli.spec.sections import GateSpec, ModelSpec, TrainSpec, VocabularySpec
from reloop_cli.spec.serving import ServingSpec
from reloop_cli.spec.types import check_types

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Spec:
    """A whole pipeline: data layout, model, training and promotion gate."""

    name: str = "pipeline"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    gate: GateSpec = field(default_factory=GateSpec)
    vocabulary: VocabularySpec = field(default_factory=VocabularySpec)
    serving: ServingSpec = field(default_factory=ServingSpec)
    adapt: AdaptSpec = field(default_factory=AdaptSpec)
    experiment: ExperimentSpec = field(default_factory=ExperimentSpec)
    source: str = "<defaults>"

    def validate(self) -> Spec:
        try:
            for section in (self.data, self.model, self.train, self.gate, self.serving):
                section.validate()
            self.experiment.validate()
            unit = self.experiment.unit
            if unit and unit not in self.data.feature_fields:
                raise BadInput(f"experiment.unit: '{unit}' is no field of [data]")
            self.adapt.validate()
            for name in (self.adapt.group_field, *self.adapt.bias_fields):
                if name and name not in self.data.feature_fields:
                    raise BadInput(f"adapt: '{name}' is no field of [data]")
            position = self.serving.position_field
            if position and position not in self.data.feature_fields:
                raise BadInput(f"serving.position_field: '{position}' is no field of [data]")
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
        check_types(type(getattr(self, section)), given, f"{self.source} [{section}]")
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
    "serving": ServingSpec,
    "adapt": AdaptSpec,
    "experiment": ExperimentSpec,
}


def _build_section(cls: type, raw: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    values = {}
    raw = _replaced(raw, known, where)
    for key, value in raw.items():
        if key not in known:
            raise BadInput(f"{where}: unknown key '{key}' (known: {', '.join(known)})")
        values[key] = tuple(value) if isinstance(value, list) else value
    check_types(cls, values, where)
    return cls(**values)


def _replaced(raw: dict[str, Any], known: dict, where: str) -> dict[str, Any]:
    """`raw` with replaced settings read as their successors (`memory_compensation = "blend"`
    is `memory_gamma = 1.0`); the new setting wins where both are given."""
    raw = dict(raw)
    for old, (new, values) in REPLACED.items():
        if old in raw and old not in known:
            value = raw.pop(old)
            if value not in values:
                raise BadInput(f"{where} {old} = {value!r}: must be one of {', '.join(values)}")
            raw.setdefault(new, values[value])
    return raw


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
    if path.is_dir():
        raise BadInput(f"{path}: is a folder, not a spec file; give the TOML file itself")
    if not path.is_file():
        raise BadInput(f"{path}: spec file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise BadInput(f"{path}: not UTF-8 text (byte {err.start}); is it the spec file?") from None
    return spec_from_dict(with_environment(raw, environ), str(path))


def with_environment(raw: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """A spec's raw sections with RELOOP_<SECTION>_<KEY> variables laid over them."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for section, values in env_overrides(os.environ if environ is None else environ).items():
        merged.setdefault(section, {}).update(values)
    return merged
