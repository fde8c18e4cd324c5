"""Adapters made from a spec's [adapt] section: one place that turns settings into adapters, for
`reloop replay` (every adapter, side by side) and `reloop serve` (the one `serving.adapter`
names)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from reloop_cli.adapt.base import Adapter, Base
from reloop_cli.adapt.error_memory import ErrorMemory, MemorySettings
from reloop_cli.adapt.field_bias import FieldBias
from reloop_cli.adapt.incremental import ComposedMemory, IncrementalFineTune
from reloop_cli.adapt.intercept import Intercept
from reloop_cli.adapt.keys import KeyStats
from reloop_cli.errors import BadInput
from reloop_cli.spec.adapt import ADAPTERS
from reloop_cli.spec.pipeline import Spec


def memory_settings(spec: Spec, seed: int) -> MemorySettings:
    adapt = spec.adapt
    return MemorySettings(
        arrays=adapt.memory_arrays,
        bits=adapt.memory_bits,
        weight=adapt.memory_weight,
        temperature=adapt.memory_temperature,
        similarity=adapt.memory_similarity,
        gamma=adapt.memory_gamma,
        min_count=adapt.memory_min_count,
        seed=seed,
    )


def bias_fields(spec: Spec) -> tuple[str, ...]:
    """The fields field bias corrects per value: as set, else the second feature field (the
    item, in the usual user-item-context order)."""
    return tuple(spec.adapt.bias_fields or spec.data.feature_fields[1:2])


def group_field(spec: Spec) -> str:
    """The field gAUC groups by: as set, else the first feature field (the user)."""
    return spec.adapt.group_field or spec.data.feature_fields[0]


def make_adapter(
    name: str,
    spec: Spec,
    model: nn.Module,
    key_dim: int,
    seed: int,
    key_stats: KeyStats | None = None,
) -> Adapter:
    """The adapter `name` with the spec's settings, empty; `key_stats` standardise the keys a
    fine-tuned copy hands to a memory (`adapt.memory_key = "standardized"`)."""
    adapt = spec.adapt

    def incremental() -> IncrementalFineTune:
        return IncrementalFineTune(
            model,
            adapt.incremental_learning_rate,
            adapt.incremental_batch_size,
            seed,
            "preactivation" if adapt.memory_key == "standardized" else adapt.memory_key,
            key_stats,
        )

    makers: dict[str, Callable[[], Adapter]] = {
        "base": Base,
        "intercept": lambda: Intercept(adapt.intercept_window_rows),
        "field_bias": lambda: FieldBias(
            bias_fields(spec), adapt.bias_half_life, adapt.bias_prior_clicks, adapt.bias_max_values
        ),
        "reloop2": lambda: ErrorMemory(memory_settings(spec, seed), key_dim),
        "incremental": incremental,
        "reloop2+incremental": lambda: ComposedMemory(
            incremental(), ErrorMemory(memory_settings(spec, seed), key_dim)
        ),
    }
    if name not in makers:
        raise BadInput(f"adapter: '{name}' is not one of {', '.join(ADAPTERS)}")
    return makers[name]()
