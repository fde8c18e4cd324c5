"""ReLoop2's error memory (Zhu, Cai et al., KDD 2023, arXiv 2306.08808), gamma = 1, in PyTorch-free
numpy: labelled impressions are written into a sketch keyed by the model's last hidden layer,
and a prediction is pulled towards what similar recent impressions really did.

- Key: the version's last hidden layer for the impression (`adapt/keys.py`).
- Memory: K independent arrays of 2^L buckets. Array k hashes a key with L signed random
  projections (SimHash: bit j is whether the key's dot product with the projection is positive)
  to one bucket, which holds running sums of the labelled impressions written to it: their
  count, Σy and Σy_base. Write and read cost O(K·L·d) a row whatever has been written; the memory
  is 2^L x K x 3 numbers, fixed when the memory is made, and a reset empties it (a new version).
- Estimate: a query reads its own bucket in each array; buckets with fewer than `min_count`
  rows are skipped; the K bucket means are combined with softmax attention at temperature τ over
  each bucket's similarity to the query, giving ȳ (and ȳ_base).
- Compensation: y = clamp((1 - λ)·y_base + λ·ȳ) (`compensation = "blend"`, the paper's form), or
  y = clamp(y_base + λ·(ȳ - ȳ_base)) (`"residual"`: only the bucket's error, not its level).

Where the paper is ambiguous we chose, and measure the choice (docs/RESULTS.md section 6):
- a bucket's similarity: `"uniform"` (every bucket the query falls in is equally similar: all
  its K buckets hold keys whose L signs agree with the query's, so SimHash already made them
  similar), or `"cosine"`, the cosine between the query and the bucket's mean key, which needs
  Σh kept per bucket (d more numbers each, so L is capped for it);
- rows whose buckets are all below `min_count` keep the base prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reloop_cli.adapt.base import Adapter, Rows, require_labels
from reloop_cli.errors import BadInput
from reloop_cli.spec.adapt import COMPENSATIONS, MAX_MEMORY_BUCKETS, SIMILARITIES

MAX_COSINE_NUMBERS = 64_000_000  # Σh per bucket: at most this many floats (256 MB)
CHUNK = 4_096  # rows hashed at once: keeps the [rows, K, L] projections small


@dataclass(frozen=True)
class MemorySettings:
    """K arrays of 2^L buckets; λ, τ and how a bucket's similarity is read."""

    arrays: int = 64  # K (the paper's best: 70-180)
    bits: int = 12  # L (the paper: 16; fewer bits, fuller buckets on a small day)
    weight: float = 0.5  # λ (the paper's best: 0.4-0.9)
    temperature: float = 0.1  # τ
    similarity: str = "uniform"
    compensation: str = "blend"
    min_count: int = 1
    seed: int = 0

    def validate(self) -> MemorySettings:
        if self.arrays < 1 or not 1 <= self.bits <= 24:
            raise BadInput("adapt.memory: arrays >= 1 and bits in 1..24")
        if 2**self.bits * self.arrays > MAX_MEMORY_BUCKETS:
            raise BadInput(f"adapt.memory: 2^bits x arrays over {MAX_MEMORY_BUCKETS:,} buckets")
        if not 0.0 <= self.weight <= 1.0 or self.temperature <= 0 or self.min_count < 1:
            raise BadInput("adapt.memory: weight in [0, 1], temperature > 0, min_count >= 1")
        if self.similarity not in SIMILARITIES:
            raise BadInput(f"adapt.memory.similarity: one of {', '.join(SIMILARITIES)}")
        if self.compensation not in COMPENSATIONS:
            raise BadInput(f"adapt.memory.compensation: one of {', '.join(COMPENSATIONS)}")
        return self


class ErrorMemory(Adapter):
    name = "reloop2"

    def __init__(self, settings: MemorySettings, key_dim: int) -> None:
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
        written = np.stack(
            [
                np.ones(flat.size, np.float32),
                np.repeat(labels, k),
                np.repeat(rows.pctr.astype(np.float32), k),
            ],
            axis=1,
        )
        np.add.at(self.sums, flat, written)  # a bucket hit twice in a batch counts twice
        if self.key_sums is not None:
            np.add.at(self.key_sums, flat, np.repeat(rows.keys.astype(np.float32), k, axis=0))

    def estimate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ȳ, ȳ_base, found) per row: the attention-weighted bucket means, and whether any of
        the row's buckets held `min_count` rows."""
        cells = self.buckets(keys)
        read = self.sums[cells].astype(np.float64)  # [rows, K, 3]
        count = read[..., 0]
        valid = count >= self.settings.min_count
        safe = np.maximum(count, 1.0)
        means = read[..., 1] / safe
        base_means = read[..., 2] / safe
        found = valid.any(axis=1)
        if self.key_sums is None:  # uniform: the softmax of equal scores is an even split
            weights = valid / np.maximum(valid.sum(axis=1, keepdims=True), 1)
            return (weights * means).sum(axis=1), (weights * base_means).sum(axis=1), found
        centres = self.key_sums[cells] / safe[..., None]
        query = np.asarray(keys, dtype=np.float64)[:, None, :]
        norms = np.linalg.norm(centres, axis=2) * np.linalg.norm(query, axis=2)
        similarity = (centres * query).sum(axis=2) / np.maximum(norms, 1e-12)
        scores = np.where(valid, similarity / self.settings.temperature, -np.inf)
        scores[~found] = 0.0  # no bucket: weights unused, kept finite
        scores -= scores.max(axis=1, keepdims=True)
        weights = np.exp(scores) * valid
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
        return (weights * means).sum(axis=1), (weights * base_means).sum(axis=1), found

    def predict(self, rows: Rows) -> np.ndarray:
        base = np.asarray(rows.pctr, dtype=np.float64)
        weight = self.settings.weight
        if weight == 0.0:
            return base.copy()  # λ = 0 is the base prediction exactly
        estimate, base_estimate, found = self.estimate(rows.keys)
        if self.settings.compensation == "blend":
            corrected = (1 - weight) * base + weight * estimate
        else:
            corrected = base + weight * (estimate - base_estimate)
        return np.where(found, np.clip(corrected, 0.0, 1.0), base)

    def reset(self) -> None:
        for array in (self.sums, self.key_sums):
            if array is not None:
                array.fill(0)

    def memory_bytes(self) -> int:
        arrays = [self.sums, self.planes, self.key_sums]
        return int(sum(a.nbytes for a in arrays if a is not None))
