"""ReLoop2's error memory (Zhu, Cai et al., KDD 2023, arXiv 2306.08808) in PyTorch-free numpy:
labelled impressions are written into a sketch keyed by a hidden representation of the version,
and a prediction is pulled towards what similar recent impressions really did.

- Key: a representation of the impression by the version (`adapt/keys.py`: the last hidden
  layer after or before its activation, or that pre-activation standardised on the version's
  training rows, `adapt.memory_key`).
- Memory: K independent arrays of 2^L buckets. Array k hashes a key with L signed random
  projections (SimHash: bit j is whether the key's dot product with the projection is positive)
  to one bucket, which holds running sums of the labelled impressions written to it: their
  count, Σy and Σy_base. Write and read cost O(K·L·d) a row whatever has been written; the memory
  is 2^L x K x 3 numbers, fixed when the memory is made, and a reset empties it (a new version).
- Readout, as the paper attends over stored samples: a bucket of n samples whose mean key has
  similarity s to the query stands for n samples at that similarity, so its weight is
  n·exp(s/τ), normalised over the query's K buckets (softmax over the samples, counts
  respected): ȳ = Σ w_k ȳ_k, ȳ_base = Σ w_k ȳ_base,k. Similarity is `"cosine"` (query vs the
  bucket's mean key, which needs Σh per bucket) or `"uniform"` (s = 0: every bucket the query
  falls in agrees with it on all L signs, so the weights are the counts). Buckets with fewer than
  `min_count` rows are skipped; a query with none keeps its base prediction.
- Compensation: the estimated error ê = ȳ - γ·ŷ - (1 - γ)·ȳ_base, and ŷ' = clamp(ŷ + λ·ê).
  γ = 1 (default) is the paper's: ŷ' = (1 - λ)·ŷ + λ·ȳ, the neighbours' labels against this
  prediction; γ = 0 compensates only the neighbours' own error, ȳ - ȳ_base (their level
  cancels). λ = 0 returns the base prediction exactly.
- Occupancy, reported with every replay and by `reloop serve`: buckets used per array, rows in
  the buckets queries read (p50, p90), and the share of those reads that found an empty bucket.
  A key that does not spread (ReLU zeros, a collapsed layer) fills few buckets with crowds, and
  the memory degenerates into a running CTR: these figures show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reloop_cli.adapt.base import Adapter, Rows, require_labels
from reloop_cli.errors import BadInput
from reloop_cli.spec.adapt import MAX_MEMORY_BUCKETS, SIMILARITIES

MAX_COSINE_NUMBERS = 64_000_000  # Σh per bucket: at most this many floats (256 MB)
CHUNK = 4_096  # rows hashed at once: keeps the [rows, K, L] projections small
READS_KEPT = 200_000  # the newest bucket reads kept for the occupancy quantiles


@dataclass(frozen=True)
class MemorySettings:
    """K arrays of 2^L buckets; λ, τ and how a bucket's similarity is read."""

    arrays: int = 64  # K (the paper's best: 70-180)
    bits: int = 12  # L (the paper: 16; fewer bits, fuller buckets on a small day)
    weight: float = 0.5  # λ (the paper's best: 0.4-0.9)
    temperature: float = 0.1  # τ
    similarity: str = "uniform"
    gamma: float = 1.0  # γ: 1 the paper's compensation, 0 the neighbours' own error only
    min_count: int = 1
    seed: int = 0

    def validate(self) -> MemorySettings:
        if self.arrays < 1 or not 1 <= self.bits <= 24:
            raise BadInput("adapt.memory: arrays >= 1 and bits in 1..24")
        if 2**self.bits * self.arrays > MAX_MEMORY_BUCKETS:
            raise BadInput(f"adapt.memory: 2^bits x arrays over {MAX_MEMORY_BUCKETS:,} buckets")
        if not 0.0 <= self.weight <= 1.0 or self.temperature <= 0 or self.min_count < 1:
            raise BadInput("adapt.memory: weight in [0, 1], temperature > 0, min_count >= 1")
        if not 0.0 <= self.gamma <= 1.0:
            raise BadInput("adapt.memory.gamma: in [0, 1]")
        if self.similarity not in SIMILARITIES:
            raise BadInput(f"adapt.memory.similarity: one of {', '.join(SIMILARITIES)}")
        return self


class ErrorMemory(Adapter):
    name = "reloop2"

    def __init__(self, settings: MemorySettings, key_dim: int) -> None:
        if key_dim < 1:
            raise BadInput(
                "adapter reloop2: the model has no layer to key its memory by (model lr); "
                "serve a model with embeddings, or another adapter"
            )
        self.settings = settings.validate()
        self.key_dim = key_dim
        k, bits = settings.arrays, settings.bits
        rng = np.random.default_rng(settings.seed)
        self.planes = rng.standard_normal((key_dim, k * bits)).astype(np.float32)
        # a bucket's code as a float32 dot product of its signs with powers of two: exact up to
        # 2^24 (bits <= 24), and a BLAS call instead of a Python-sized integer reduction
        self.powers = (2.0 ** np.arange(bits)).astype(np.float32)
        self.offsets = (np.arange(k, dtype=np.int64) << bits)[None, :]
        cells = k << bits
        if settings.similarity == "cosine" and cells * key_dim > MAX_COSINE_NUMBERS:
            raise BadInput(
                f"adapt.memory: similarity 'cosine' keeps {cells * key_dim:,} numbers "
                f"(K x 2^L x key size), over {MAX_COSINE_NUMBERS:,}: lower bits or arrays"
            )
        # One row per bucket (count, Σy, Σy_base) side by side: a read touches one cache line
        # per bucket, not three (the reads are random over megabytes: that is their cost).
        self.sums = np.zeros((cells, 3), np.float32)
        self.sums.fill(0)  # touch every page now, not in the request that first writes there
        self.key_sums = (
            np.zeros((cells, key_dim), np.float32) if settings.similarity == "cosine" else None
        )
        self.written = 0
        # The newest queried buckets' row counts, a ring (a request copies only its own reads)
        self.reads = np.zeros(READS_KEPT, np.float32)
        self.reads_at, self.reads_filled = 0, 0
        self.queries = 0
        self.queries_without_any = 0
        self._summing: np.ndarray | None = None

    # --- the sketch -------------------------------------------------------------------------
    def buckets(self, keys: np.ndarray) -> np.ndarray:
        """[rows, K] flat bucket indices (array k's buckets start at k·2^L)."""
        keys = np.asarray(keys, dtype=np.float32)
        k, bits = self.settings.arrays, self.settings.bits
        out = np.empty((keys.shape[0], k), np.int64)
        for start in range(0, keys.shape[0], CHUNK):
            signs = (keys[start : start + CHUNK] @ self.planes) > 0
            codes = signs.reshape(-1, bits).astype(np.float32) @ self.powers  # one gemv
            out[start : start + CHUNK] = codes.astype(np.int64).reshape(-1, k) + self.offsets
        return out

    def observe(self, rows: Rows) -> None:
        labels = require_labels(rows, self.name).astype(np.float32)
        cells = self.buckets(rows.keys)
        k = self.settings.arrays
        flat = cells.reshape(-1)
        # a bucket hit twice in a batch counts twice; one 1-D add.at a column (numpy's fast
        # path), 5x quicker than one add.at of [rows·K, 3] rows: it was most of a served write
        np.add.at(self.sums[:, 0], flat, np.float32(1.0))
        np.add.at(self.sums[:, 1], flat, np.repeat(labels, k))
        np.add.at(self.sums[:, 2], flat, np.repeat(rows.pctr.astype(np.float32), k))
        if self.key_sums is not None:
            np.add.at(self.key_sums, flat, np.repeat(rows.keys.astype(np.float32), k, axis=0))
        self.written += len(rows)

    def estimate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ȳ, ȳ_base, found) per row: the bucket means weighted by n·exp(s/τ), and whether any
        of the row's buckets held `min_count` rows."""
        cells = self.buckets(keys)
        read = np.take(self.sums, cells, axis=0)  # [rows, K, 3]; take is 2x fancy indexing
        count = read[..., 0]
        valid = count >= self.settings.min_count
        if self.key_sums is None:
            # s = 0 for every bucket: the weights n / Σn make ȳ = Σy / Σn over the valid
            # buckets. One matmul sums the K buckets (numpy's reduction over a middle axis of
            # a [rows, K, 3] array is 30x slower: it was a third of the memory's /score cost).
            if self.settings.min_count > 1:
                read = read * valid[..., None]
            totals = read.reshape(len(cells), -1).astype(np.float64) @ self._summer()
            self._note_reads(count, totals[:, 0] < 1)
            found = totals[:, 0] > 0
            safe = np.maximum(totals[:, 0], 1.0)
            return totals[:, 1] / safe, totals[:, 2] / safe, found
        read = read.astype(np.float64)
        count = read[..., 0]
        self._note_reads(count, count.max(axis=1, initial=0) < 1)
        safe = np.maximum(count, 1.0)
        means = read[..., 1] / safe
        base_means = read[..., 2] / safe
        found = valid.any(axis=1)
        centres = self.key_sums[cells] / safe[..., None]
        query = np.asarray(keys, dtype=np.float64)[:, None, :]
        norms = np.linalg.norm(centres, axis=2) * np.linalg.norm(query, axis=2)
        similarity = (centres * query).sum(axis=2) / np.maximum(norms, 1e-12)
        scores = np.where(valid, similarity / self.settings.temperature, -np.inf)
        scores[~found] = 0.0  # no bucket: weights unused, kept finite
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores) * count * valid  # n·exp(s/τ): every stored sample weighs once
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
        return (weights * means).sum(axis=1), (weights * base_means).sum(axis=1), found

    def _summer(self) -> np.ndarray:
        """[K·3, 3] of 0/1: a [rows, K·3] read times it is each row's (Σn, Σy, Σy_base)."""
        if self._summing is None:
            self._summing = np.tile(np.eye(3), (self.settings.arrays, 1))
        return self._summing

    def predict(self, rows: Rows) -> np.ndarray:
        base = np.asarray(rows.pctr, dtype=np.float64)
        weight, gamma = self.settings.weight, self.settings.gamma
        if weight == 0.0:
            return base.copy()  # λ = 0 is the base prediction exactly
        estimate, base_estimate, found = self.estimate(rows.keys)
        error = estimate - gamma * base - (1.0 - gamma) * base_estimate
        return np.where(found, np.clip(base + weight * error, 0.0, 1.0), base)

    def reset(self) -> None:
        for array in (self.sums, self.key_sums):
            if array is not None:
                array.fill(0)
        self.written, self.queries, self.queries_without_any = 0, 0, 0
        self.reads_at, self.reads_filled = 0, 0

    # --- occupancy --------------------------------------------------------------------------
    def _note_reads(self, count: np.ndarray, without_any: np.ndarray | None = None) -> None:
        """Keep a request's [rows, K] bucket counts in the ring; `without_any` marks the rows
        whose buckets were all empty (computed from `count` when the caller has not)."""
        if without_any is None:
            without_any = count.max(axis=1, initial=0) < 1
        self.queries += count.shape[0]
        self.queries_without_any += int(without_any.sum())
        values = count.reshape(-1)[-READS_KEPT:]
        first = min(values.size, READS_KEPT - self.reads_at)
        self.reads[self.reads_at : self.reads_at + first] = values[:first]
        self.reads[: values.size - first] = values[first:]  # the rest wraps to the front
        self.reads_at = (self.reads_at + values.size) % READS_KEPT
        self.reads_filled = min(self.reads_filled + values.size, READS_KEPT)

    def occupancy(self) -> dict:
        """How the memory is filled and read: buckets used per array (of 2^L), rows per
        queried bucket (p50, p90, over the newest reads), the share of reads that found an
        empty bucket, and of queries that found no row at all."""
        k, size = self.settings.arrays, 2**self.settings.bits
        used = (self.sums[:, 0].reshape(k, size) > 0).sum(axis=1)
        reads = self.reads[: self.reads_filled]  # the order does not matter to quantiles
        return {
            "rows_written": self.written,
            "buckets_per_array": size,
            "buckets_used_mean": float(used.mean()),
            "buckets_used_min": int(used.min()),
            "buckets_used_max": int(used.max()),
            "queries": self.queries,
            "rows_per_read_p50": float(np.quantile(reads, 0.5)) if reads.size else None,
            "rows_per_read_p90": float(np.quantile(reads, 0.9)) if reads.size else None,
            "empty_read_share": float((reads < 1).mean()) if reads.size else None,
            "queries_without_any_share": (
                self.queries_without_any / self.queries if self.queries else None
            ),
        }

    def memory_bytes(self) -> int:
        arrays = [self.sums, self.planes, self.key_sums]
        return int(sum(a.nbytes for a in arrays if a is not None))
