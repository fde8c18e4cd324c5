"""What a result was computed on, recorded beside it.

Why: one seed's test AUC on Frappe moves by 0.0005 between 1 and 2 CPU threads with the same
code, data and seed (float sums in another order), and a table measured on 2026-11-23 could not
be reproduced because its raw file did not say where it ran (docs/RESULTS.md section 2). Every
version's meta.json and every `reloop reproduce --json` carries this, so a figure can be
re-run under the same conditions.
"""

from __future__ import annotations

import platform

import polars as pl
import torch

from reloop_cli.training import distributed


def environment() -> dict:
    """Library versions, the Python, the machine's architecture, torch's CPU threads per process
    and the number of processes."""
    return {
        "torch": torch.__version__,
        "polars": pl.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "world_size": distributed.world_size(),
    }
