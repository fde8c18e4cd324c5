"""Training rows streamed from Parquet, one row group at a time, straight into torch batches.

The encoded window is written once (Polars `sink_parquet`, streaming) to the version's staging
folder; each epoch then visits the row groups in a seeded random order and shuffles inside each
group. Memory holds one row group, not the window, so it does not grow with the number of days.
Every row is yielded exactly once per epoch: leftovers that do not fill a batch are carried into
the next group rather than dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch

from reloop_cli.features.encoding import TensorTable, to_tensors
from reloop_cli.spec.pipeline import Spec

ROW_GROUP_ROWS = 65_536


class ParquetBatches:
    """Encoded rows in a Parquet file, yielded as (categorical, dense, label, y_last) batches."""

    def __init__(self, path: Path, spec: Spec, y_last_column: str | None) -> None:
        self.path = Path(path)
        self.spec = spec
        self.y_last_column = y_last_column
        self.file = pq.ParquetFile(self.path)

    @classmethod
    def write(
        cls,
        rows: pl.LazyFrame,
        path: Path,
        spec: Spec,
        y_last_column: str | None,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> ParquetBatches:
        """Stream a lazy query of encoded rows to `path` and open it for batching."""
        rows.sink_parquet(path, row_group_size=row_group_rows, compression="lz4")
        return cls(path, spec, y_last_column)

    def __len__(self) -> int:
        return self.file.metadata.num_rows

    def _group(self, index: int) -> TensorTable:
        frame = pl.from_arrow(self.file.read_row_group(index))
        return to_tensors(frame, self.spec, self.y_last_column)

    def tables(self, generator: torch.Generator | None = None) -> Iterator[TensorTable]:
        """Row groups as tensor tables, in a random order when a generator is given."""
        groups = np.arange(self.file.num_row_groups)
        if generator is not None:
            groups = groups[torch.randperm(len(groups), generator=generator).numpy()]
        for index in groups:
            yield self._group(int(index))

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Full batches, then one last short batch; a single leftover row joins the batch before
        it (BatchNorm cannot train on one row)."""
        carry: tuple[torch.Tensor, ...] | None = None
        pending: tuple[torch.Tensor, ...] | None = None
        for table in self.tables(generator):
            for part in table.batches(batch_size, generator):
                if len(part[0]) < batch_size:
                    carry = part if carry is None else _cat(carry, part)
                    if len(carry[0]) < batch_size:
                        continue
                    part = tuple(t[:batch_size] for t in carry)
                    carry = tuple(t[batch_size:] for t in carry)
                if pending is not None:
                    yield pending
                pending = part
        if carry is not None and len(carry[0]) == 1 and pending is not None:
            pending, carry = _cat(pending, carry), None
        if pending is not None:
            yield pending
        if carry is not None and len(carry[0]):
            yield carry


def _cat(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.cat([x, y]) for x, y in zip(a, b, strict=True))
