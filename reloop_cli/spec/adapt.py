"""The [adapt] section: how the adapters that correct a version between retrains are set
(`reloop replay`; docs/guides/adapting.md). Choose them on an earlier day than the one reported
(`reloop replay --tune-day`)."""

from __future__ import annotations

from dataclasses import dataclass

from reloop_cli.spec.checks import check

ADAPTERS = ("base", "intercept", "field_bias", "reloop2", "incremental", "reloop2+incremental")
# What `reloop serve` can run (`serving.adapter`): fine-tuning would train in the request path.
SERVED_ADAPTERS = ("intercept", "field_bias", "reloop2")
SIMILARITIES = ("uniform", "cosine")  # how ReLoop2 weighs a query's buckets
# What ReLoop2 hashes: the last hidden layer as the output layer reads it (after its
# activation), its pre-activation, or that pre-activation centred and scaled on the version's
# training rows (adapt/keys.py).
MEMORY_KEYS = ("hidden", "preactivation", "standardized")
# A setting that was replaced, and how its old values read in the new one: specs stored in
# workspaces, versions and releases before the change keep loading, and mean what they meant.
REPLACED = {
    "memory_compensation": ("memory_gamma", {"blend": 1.0, "residual": 0.0}),
}
# ReLoop2's memory holds 2^memory_bits x memory_arrays buckets, each a count and two sums
# (12 bytes; with cosine similarity also a key's sum). At most this many buckets (768 MiB of
# counts and sums), refused when the spec is read, before anything is allocated.
MAX_MEMORY_BUCKETS = 2**26
BUCKET_BYTES = 12


@dataclass(frozen=True)
class AdaptSpec:
    group_field: str = ""  # gAUC groups (a user field); empty: the first categorical field
    intercept_window_rows: int = 5_000  # the labelled rows the intercept is refitted on
    bias_fields: tuple[str, ...] = ()  # field bias: per value of these (empty: the second field)
    bias_half_life: float = 4.0  # slots after which a value's residual weighs half
    bias_prior_clicks: float = 5.0  # shrinks a value seen a few times towards no correction
    bias_max_values: int = 200_000  # per field; past it the lightest values are dropped
    memory_arrays: int = 64  # ReLoop2's K
    memory_bits: int = 12  # ReLoop2's L
    memory_weight: float = 0.5  # ReLoop2's λ
    memory_temperature: float = 0.1  # ReLoop2's τ
    memory_similarity: str = "uniform"  # uniform | cosine
    memory_gamma: float = 1.0  # ReLoop2's γ: 1 the paper's compensation, 0 the residual form
    memory_key: str = "standardized"  # hidden | preactivation | standardized (spreads)
    memory_min_count: int = 1
    incremental_learning_rate: float = 5e-4  # one pass per labelled slot
    incremental_batch_size: int = 512

    def validate(self) -> None:
        check(self.intercept_window_rows >= 1, "adapt.intercept_window_rows", "must be >= 1")
        check(self.bias_half_life > 0, "adapt.bias_half_life", "must be > 0")
        check(self.bias_prior_clicks > 0, "adapt.bias_prior_clicks", "must be > 0")
        check(self.bias_max_values >= 1, "adapt.bias_max_values", "must be >= 1")
        check(self.memory_arrays >= 1, "adapt.memory_arrays", "must be >= 1")
        check(1 <= self.memory_bits <= 24, "adapt.memory_bits", "must be in 1..24")
        buckets = 2**self.memory_bits * self.memory_arrays
        check(
            buckets <= MAX_MEMORY_BUCKETS,
            "adapt.memory_arrays",
            f"2^{self.memory_bits} x {self.memory_arrays} = {buckets:,} buckets "
            f"({buckets * BUCKET_BYTES / 2**30:.1f} GiB), over the limit of {MAX_MEMORY_BUCKETS:,} "
            f"({MAX_MEMORY_BUCKETS * BUCKET_BYTES / 2**30:.2f} GiB); lower memory_bits or "
            "memory_arrays",
        )
        check(0 <= self.memory_weight <= 1, "adapt.memory_weight", "must be in [0, 1]")
        check(self.memory_temperature > 0, "adapt.memory_temperature", "must be > 0")
        check(
            self.memory_similarity in SIMILARITIES,
            "adapt.memory_similarity",
            "uniform or cosine",
        )
        check(0 <= self.memory_gamma <= 1, "adapt.memory_gamma", "must be in [0, 1]")
        check(
            self.memory_key in MEMORY_KEYS,
            "adapt.memory_key",
            f"'{self.memory_key}' is not one of {', '.join(MEMORY_KEYS)}",
        )
        check(self.memory_min_count >= 1, "adapt.memory_min_count", "must be >= 1")
        check(self.incremental_learning_rate > 0, "adapt.incremental_learning_rate", "> 0")
        check(self.incremental_batch_size >= 1, "adapt.incremental_batch_size", "must be >= 1")
