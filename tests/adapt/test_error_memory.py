"""ReLoop2's error memory as a sketch: where a key lands, what it holds, what it forgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reloop_cli.adapt.base import Rows
from reloop_cli.adapt.error_memory import ErrorMemory, MemorySettings
from reloop_cli.errors import BadInput

KEY_DIM = 12


def make_rows(n: int, seed: int, labels: bool = True) -> Rows:
    rng = np.random.default_rng(seed)
    return Rows(
        pctr=rng.uniform(0.05, 0.4, n),
        keys=rng.standard_normal((n, KEY_DIM)).astype(np.float32),
        categorical=torch.zeros((n, 1), dtype=torch.long),
        dense=torch.zeros((n, 0)),
        labels=rng.integers(0, 2, n).astype(np.float64) if labels else None,
    )


@pytest.mark.parametrize("similarity", ["uniform", "cosine"])
def test_a_query_identical_to_a_written_key_reads_its_own_bucket_in_every_array(similarity):
    memory = ErrorMemory(MemorySettings(arrays=16, bits=10, similarity=similarity), KEY_DIM)
    written = make_rows(1, seed=1)
    memory.observe(written)
    cells = memory.buckets(written.keys)
    assert cells.shape == (1, 16)
    # array k's buckets are [k·2^L, (k+1)·2^L): each index lies in its own array
    assert np.array_equal(cells[0] >> 10, np.arange(16))
    assert np.all(memory.sums[cells[0], 0] == 1)
    assert memory.sums[:, 0].sum() == 16  # one row written once in each array, nowhere else
    # the query reads exactly that row back: its label, and the base prediction it was written with
    estimate, base_estimate, found = memory.estimate(written.keys)
    assert found[0]
    assert estimate[0] == pytest.approx(written.labels[0])
    assert base_estimate[0] == pytest.approx(written.pctr[0], rel=1e-6)


def test_the_memory_does_not_grow_with_rows_written_and_a_reset_empties_it():
    memory = ErrorMemory(MemorySettings(arrays=8, bits=8), KEY_DIM)
    empty_size = memory.memory_bytes()
    assert empty_size == 8 * 256 * 3 * 4 + KEY_DIM * 8 * 8 * 4  # sums + projections
    for seed in range(5):
        memory.observe(make_rows(2_000, seed=seed))
        assert memory.memory_bytes() == empty_size
    assert memory.sums[:, 0].sum() == 5 * 2_000 * 8
    memory.reset()
    assert not memory.sums.any()
    query = make_rows(50, seed=9, labels=False)
    assert np.array_equal(memory.predict(query), query.pctr)  # empty: every row keeps its base


def test_weight_zero_returns_the_base_prediction_exactly():
    memory = ErrorMemory(MemorySettings(arrays=8, bits=6, weight=0.0), KEY_DIM)
    memory.observe(make_rows(3_000, seed=2))
    query = make_rows(500, seed=3, labels=False)
    assert np.array_equal(memory.predict(query), query.pctr)


def test_a_full_memory_pulls_predictions_towards_what_similar_rows_did():
    """Rows whose keys point one way always click, the others never: after writing them, the
    memory moves a fresh query of each kind towards its kind's outcome, by λ."""
    rng = np.random.default_rng(4)
    direction = rng.standard_normal(KEY_DIM).astype(np.float32)
    keys = rng.standard_normal((4_000, KEY_DIM)).astype(np.float32) * 0.1
    sign = np.where(np.arange(4_000) % 2 == 0, 1.0, -1.0).astype(np.float32)
    keys += sign[:, None] * direction
    rows = Rows(
        pctr=np.full(4_000, 0.5),
        keys=keys,
        categorical=torch.zeros((4_000, 1), dtype=torch.long),
        dense=torch.zeros((4_000, 0)),
        labels=(sign > 0).astype(np.float64),
    )
    memory = ErrorMemory(MemorySettings(arrays=32, bits=4, weight=0.6), KEY_DIM)
    memory.observe(rows)
    queries = Rows(
        pctr=np.full(2, 0.5),
        keys=np.stack([direction, -direction]),
        categorical=torch.zeros((2, 1), dtype=torch.long),
        dense=torch.zeros((2, 0)),
    )
    clicker, non_clicker = memory.predict(queries)
    assert clicker == pytest.approx(0.4 * 0.5 + 0.6 * 1.0, abs=0.02)  # (1 - λ)·0.5 + λ·1
    assert non_clicker == pytest.approx(0.4 * 0.5, abs=0.02)


def test_same_seed_same_projections_and_bad_settings_name_the_field():
    a = ErrorMemory(MemorySettings(seed=5), KEY_DIM)
    b = ErrorMemory(MemorySettings(seed=5), KEY_DIM)
    assert np.array_equal(a.planes, b.planes)
    with pytest.raises(BadInput, match=r"adapt\.memory\.similarity"):
        ErrorMemory(MemorySettings(similarity="dot"), KEY_DIM)
    with pytest.raises(BadInput, match="cosine"):
        ErrorMemory(MemorySettings(similarity="cosine", arrays=180, bits=16), 64)
