"""Helpers the tests share: where the repository and the Frappe files are, what a workspace holds,
scoring with an exported model, and `reloop run` as cron runs it (a spec, a subprocess, a log
folder that receives one day at a time)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reloop_cli.store.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
FRAPPE = REPO.parent / "shared" / "data" / "frappe"


def workspace_files(ws: Workspace) -> list[Path]:
    """Everything under a workspace except the lock file: 'nothing written' means this is empty."""
    if not ws.root.exists():
        return []
    return sorted(p for p in ws.root.rglob("*") if p.is_file() and p.name != ".lock")


def run_exported(path, fmt, categorical, dense):
    """Click probabilities from an exported TorchScript or ONNX file."""
    if fmt == "torchscript":
        import torch

        with torch.no_grad():
            return torch.jit.load(str(path))(categorical, dense).numpy()
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    given = {"categorical": categorical.numpy(), "dense": dense.numpy()}
    # A model with no dense fields has no `dense` input in its graph: feed what it asks for.
    wanted = {i.name: given[i.name] for i in session.get_inputs()}
    return session.run(None, wanted)[0]


SPEC = """
name = "cron-test"
[data]
label = "click"
categorical = ["user_id", "item_id", "category", "hour", "device", "position"]
time_column = "ts"
impression_id = "impression_id"
oracle = "true_ctr"
max_reject_fraction = {reject}
[model]
name = "deepfm"
embedding_dim = 8
hidden_units = [16]
[train]
loss = "reloop"
window_days = 2
epochs = 2
batch_size = 256
learning_rate = {lr}
seed = 3
[gate]
# The tiny holdouts here (about 600 rows, 60 clicks) pin AUC to about +-0.06: wide margins, so
# these tests exercise the cycle, not the statistics (tests/operations/test_gate.py does that).
max_auc_drop = 0.1
max_logloss_rise = 0.1
min_clicks = 20
"""


def write_spec(folder: Path, name: str, lr: float = 0.01, reject: float = 0.0) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(SPEC.format(lr=lr, reject=reject))
    return path


def reloop(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RELOOP_CRASH_AT"}
    if crash_at:
        env["RELOOP_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "reloop_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


class Feed:
    """A log folder that receives one day file at a time, like a nightly drop."""

    def __init__(self, days: list[Path], folder: Path) -> None:
        self.days, self.folder = days, folder
        folder.mkdir(parents=True, exist_ok=True)

    def arrive(self, count: int) -> None:
        for path in self.days[:count]:
            shutil.copy(path, self.folder / path.name)


def cycle(ws: Path, spec: Path, feed: Feed, *extra: str, crash_at: str | None = None):
    return reloop(
        "run",
        "--spec",
        str(spec),
        "--logs",
        str(feed.folder),
        "-w",
        str(ws),
        *extra,
        crash_at=crash_at,
    )
