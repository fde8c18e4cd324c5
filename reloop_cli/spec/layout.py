"""The field layout a spec implies: which fields are embedding lookups (and in what order their
blocks sit in the table), how many index columns each takes, and which are dense values.

Every stage that builds, encodes for, loads or exports a model reads the layout from here, so the
order of a model's inputs is decided in one place.
"""

from __future__ import annotations

from reloop_cli.spec.pipeline import Spec


def categorical_fields(spec: Spec) -> list[str]:
    """Fields looked up in an embedding table (bucketised numerics count as categorical), in the
    order of their blocks in the table: single-valued first, multivalued last."""
    bucketised = list(spec.data.numeric) if spec.data.numeric_transform == "bucket" else []
    return [*spec.data.categorical, *bucketised, *spec.data.multivalued]


def field_slots(spec: Spec) -> list[int]:
    """Index columns per categorical field: 1, or `max_values` for a multivalued field."""
    multi = set(spec.data.multivalued)
    return [spec.data.max_values if f in multi else 1 for f in categorical_fields(spec)]


def dense_fields(spec: Spec) -> list[str]:
    """Numeric fields fed as values that scale a per-field embedding."""
    return list(spec.data.numeric) if spec.data.numeric_transform == "log" else []
