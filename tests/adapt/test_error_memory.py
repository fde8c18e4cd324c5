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


def one_neighbour(weight: float, gamma: float, similarity: str = "cosine") -> tuple:
    """A memory holding 3 rows in one bucket per array, and a query of similarity s to them."""
    settings = MemorySettings(
        arrays=4, bits=1, weight=weight, gamma=gamma, similarity=similarity, temperature=0.5
    )
    memory = ErrorMemory(settings, 2)
    memory.planes[:] = np.array([[1.0] * 4, [0.0] * 4], np.float32)  # bucket = sign of x
    keys = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    labels, written = np.array([1.0, 1.0, 0.0]), np.array([0.2, 0.3, 0.4])
    memory.observe(
        Rows(
            pctr=written,
            keys=keys,
            categorical=torch.zeros((3, 1), dtype=torch.long),
            dense=torch.zeros((3, 0)),
            labels=labels,
        )
    )
    query = Rows(
        pctr=np.array([0.25]),
        keys=np.array([[1.0, 1.0]], np.float32),  # similarity cos 45° to the stored keys
        categorical=torch.zeros((1, 1), dtype=torch.long),
        dense=torch.zeros((1, 0)),
    )
    return memory, query, labels.mean(), written.mean()


@pytest.mark.parametrize("gamma", [1.0, 0.0, 0.4])
def test_one_filled_neighbour_gives_the_papers_formula(gamma):
    """With one filled bucket (the same one in every array) the estimate is its mean label ȳ
    whatever its similarity, and the answer is ŷ + λ(ȳ - γŷ - (1 - γ)ȳ_base): at γ = 1 the
    paper's (1 - λ)ŷ + λȳ, at γ = 0 the neighbours' own error ŷ + λ(ȳ - ȳ_base)."""
    weight = 0.6
    memory, query, y_bar, base_bar = one_neighbour(weight, gamma)
    estimate, base_estimate, found = memory.estimate(query.keys)
    assert (
        found[0]
        and estimate[0] == pytest.approx(y_bar)
        and base_estimate[0] == pytest.approx(base_bar)
    )
    y_hat = query.pctr[0]
    expected = y_hat + weight * (y_bar - gamma * y_hat - (1 - gamma) * base_bar)
    assert memory.predict(query)[0] == pytest.approx(expected, rel=1e-6)
    if gamma == 1.0:
        assert memory.predict(query)[0] == pytest.approx((1 - weight) * y_hat + weight * y_bar)
    if gamma == 0.0:
        assert memory.predict(query)[0] == pytest.approx(y_hat + weight * (y_bar - base_bar))


def test_counts_and_similarity_set_the_weights_as_a_softmax_over_stored_rows():
    """Two buckets: n1 rows of mean m1 at similarity s1, n2 of mean m2 at s2. Each stored row
    weighs exp(s/τ), so the buckets weigh n·exp(s/τ); with uniform similarity, the counts."""
    memory = ErrorMemory(MemorySettings(arrays=2, bits=1, temperature=0.5, similarity="cosine"), 2)
    # array 0 splits on x, array 1 on y: a query (1, 1) reads bucket "x > 0" and bucket "y > 0"
    memory.planes[:] = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    stored = np.array([[1.0, -0.5], [1.0, -0.5], [1.0, -0.5], [-0.2, 1.0]], np.float32)
    labels = np.array([1.0, 1.0, 1.0, 0.0])
    written = Rows(
        pctr=np.full(4, 0.1),
        keys=stored,
        categorical=torch.zeros((4, 1), dtype=torch.long),
        dense=torch.zeros((4, 0)),
        labels=labels,
    )
    memory.observe(written)
    query = np.array([[1.0, 1.0]], np.float32)
    # the query's bucket in array 0 (x > 0) holds rows 0-2 (mean label 1), its bucket in
    # array 1 (y > 0) holds row 3 alone (mean label 0)
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    s1, s2 = cos(query[0], stored[0]), cos(query[0], stored[3])
    w1, w2 = 3 * np.exp(s1 / 0.5), 1 * np.exp(s2 / 0.5)
    estimate, _, _ = memory.estimate(query)
    assert estimate[0] == pytest.approx(w1 / (w1 + w2) * 1.0 + w2 / (w1 + w2) * 0.0, rel=1e-6)
    uniform = ErrorMemory(MemorySettings(arrays=2, bits=1, similarity="uniform"), 2)
    uniform.planes[:] = memory.planes
    uniform.observe(written)  # the same rows
    assert uniform.estimate(query)[0][0] == pytest.approx(3 / 4)  # the counts, 3 : 1


def test_a_key_that_spreads_fills_the_memory_and_the_occupancy_figures_count_it():
    """Distinct rows with distinct keys spread over the buckets; the occupancy figures equal a
    count made here independently from the bucket indices."""
    rng = np.random.default_rng(8)
    rows = make_rows(4_000, seed=8)
    rows.keys = rng.standard_normal((4_000, KEY_DIM)).astype(np.float32)  # centred, spread
    memory = ErrorMemory(MemorySettings(arrays=8, bits=8), KEY_DIM)
    memory.observe(rows)
    cells = memory.buckets(rows.keys)
    used = [np.unique(cells[:, k]).size for k in range(8)]
    queries = make_rows(1_000, seed=9, labels=False)
    queries.keys = rng.standard_normal((1_000, KEY_DIM)).astype(np.float32)
    memory.predict(queries)
    filled = memory.occupancy()
    assert filled["buckets_used_mean"] == pytest.approx(np.mean(used))
    assert filled["buckets_used_min"] == min(used) and filled["buckets_used_max"] == max(used)
    assert filled["buckets_used_mean"] > 0.6 * 256  # a key that spreads uses most buckets
    counts = np.bincount(cells.reshape(-1), minlength=8 * 256)
    reads = counts[memory.buckets(queries.keys)].reshape(-1)
    assert filled["rows_per_read_p50"] == pytest.approx(np.quantile(reads, 0.5))
    assert filled["rows_per_read_p90"] == pytest.approx(np.quantile(reads, 0.9))
    assert filled["empty_read_share"] == pytest.approx((reads == 0).mean())
    assert filled["queries"] == 1_000 and filled["rows_written"] == 4_000
    # a key that collapses (one sign pattern, as ReLU zeros and a shared offset make) does not
    collapsed = ErrorMemory(MemorySettings(arrays=8, bits=8), KEY_DIM)
    crowd = make_rows(4_000, seed=8)
    crowd.keys = np.abs(crowd.keys) * 0.01 + 5.0  # every key nearly the same direction
    collapsed.observe(crowd)
    assert collapsed.occupancy()["buckets_used_mean"] < 0.05 * 256


def test_the_occupancy_reads_are_the_newest_ones_when_they_wrap(monkeypatch):
    """Reads are kept in a ring of READS_KEPT: after more, the quantiles are over the newest."""
    from reloop_cli.adapt import error_memory

    monkeypatch.setattr(error_memory, "READS_KEPT", 10)
    memory = ErrorMemory(MemorySettings(arrays=1, bits=4), KEY_DIM)
    for batch in ([1.0] * 7, [2.0] * 6, [3.0] * 4):  # 17 reads: the newest 10 are six 2s, four 3s
        memory._note_reads(np.array(batch)[:, None])
    kept = np.sort(memory.reads[: memory.reads_filled])
    assert kept.tolist() == [2.0] * 6 + [3.0] * 4
    memory._note_reads(np.arange(25.0)[:, None])  # more than the ring at once: its newest 10
    assert np.sort(memory.reads[: memory.reads_filled]).tolist() == list(np.arange(15.0, 25.0))
    assert memory.occupancy()["rows_per_read_p50"] == pytest.approx(19.5)
