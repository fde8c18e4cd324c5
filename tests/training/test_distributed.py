"""Training under torchrun (DDP, gloo on localhost), as CI can run it: real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from reloop_cli.evaluation.statistics import paired
from tests.helpers import REPO, write_spec

pytestmark = pytest.mark.slow  # subprocesses and ranks: seconds each

EPOCHS = os.environ.get("RELOOP_TEST_EPOCHS", "8")  # converged, so shard order matters little
DAYS = sorted((REPO / "sample_data").glob("clicks-2024-01-0[1-4].parquet"))


def reloop(*args: str, nproc: int = 1, crash_at: str | None = None, updates: str = "auto"):
    env = {k: v for k, v in os.environ.items() if k != "RELOOP_CRASH_AT"}
    env["OMP_NUM_THREADS"] = "1"
    env["RELOOP_TRAIN_EMBEDDING_UPDATES"] = f'"{updates}"'  # sparse: gloo reduces sparse grads
    if crash_at:
        env["RELOOP_CRASH_AT"] = crash_at
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else []
    )
    return subprocess.run(
        [sys.executable, *launcher, "-m", "reloop_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


@pytest.fixture()
def workspaces(tmp_path: Path):
    spec = write_spec(tmp_path, "spec")
    roots = []
    for name in ("single", "ddp"):
        root = tmp_path / name
        result = reloop("ingest", *map(str, DAYS), "--spec", str(spec), "-w", str(root))
        assert result.returncode == 0, result.stderr
        roots.append(root)
    return spec, roots


def train_and_eval(root: Path, nproc: int, updates: str) -> tuple[dict, dict]:
    trained = reloop(
        *("train", "--day", "2024-01-03", "-w", str(root), "--json", "--epochs", EPOCHS),
        nproc=nproc,
        updates=updates,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    evaluated = reloop("eval", "-v", "1", "--day", "2024-01-04", "-w", str(root), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    return json.loads(trained.stdout), json.loads(evaluated.stdout)


@pytest.mark.parametrize("updates", ["dense", "sparse"])
def test_two_ranks_match_one_process_and_see_every_row_once_per_epoch(workspaces, updates):
    _, (single_root, ddp_root) = workspaces
    single, single_eval = train_and_eval(single_root, nproc=1, updates=updates)
    ddp, ddp_eval = train_and_eval(ddp_root, nproc=2, updates=updates)
    # Every training row was consumed exactly once per epoch, summed over both ranks.
    train_rows = single["history"][0]["rows"]
    assert all(epoch["rows"] == train_rows for epoch in ddp["history"])
    assert ddp["rows"] == single["rows"] == 60_000  # the spec's 2-day window
    # Two single training runs on 60,000 rows differ by about 0.005 AUC from training noise
    # alone (the split, the shard order), so "as good as one process" is judged as the gate
    # judges a candidate: paired on the same next-day rows, DDP is not worse by more than 0.01
    # at 95% (a broken DDP is 0.1-0.2 worse: tests of the sync itself are test_sparse_sync.py).
    day = "2024-01-04"
    scores = {
        name: pl.read_parquet(root / "scores" / "v0001" / f"day={day}" / "*.parquet")
        for name, root in (("single", single_root), ("ddp", ddp_root))
    }
    labels = pl.read_parquet(single_root / "logs" / f"day={day}" / "*.parquet")
    rows = labels.select("impression_id", "label")
    for name, frame in scores.items():
        rows = rows.join(frame.rename({"pctr": name}), on="impression_id")
    difference = paired(rows["label"].to_numpy(), rows["single"].to_numpy(), rows["ddp"].to_numpy())
    assert difference.auc.low > -0.01 and abs(difference.auc.value) < 0.01, difference.auc
    assert min(single_eval["metrics"]["auc"], ddp_eval["metrics"]["auc"]) > 0.7  # both learned
    assert len(list((ddp_root / "models").glob("v*"))) == 1  # only rank 0 wrote a version
    meta = json.loads((ddp_root / "models" / "v0001" / "meta.json").read_text())
    assert meta["embedding_updates"] == updates
    assert meta["environment"]["world_size"] == 2


def test_a_rank_that_dies_fails_the_run_and_writes_no_version(workspaces):
    _, (_, root) = workspaces
    result = reloop("train", "--day", "2024-01-03", "-w", str(root), nproc=2, crash_at="fit-rank1")
    assert result.returncode != 0
    assert not list((root / "models").glob("v*"))
