"""The promotion policy end to end, with real processes on loopback: `reloop serve` routes users
to arms, a client clicks by a planted truth, `reloop run --from-server` judges each night while
the next day's traffic keeps coming. A planted worse candidate is rolled back, a planted better
one promoted, an equal one ends inconclusive; no request fails at any swap, and every impression
carries its arm."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from reloop_cli.data.ingest import ingest
from reloop_cli.experiments.live_server import Client, ServerProcess, wait_for
from reloop_cli.operations.deploy import publish_live
from reloop_cli.store.experiments import Experiments
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import train_version

RELOOP = (sys.executable, "-m", "reloop_cli")
BASE_CTR = 0.3
USERS = 300
REQUESTS_PER_DAY = 900
WINDOW_SLACK = 1800 + 0.5 + 1  # the attribution window, the flush, a second


def plant_copy(ws: Workspace, source: int, target: int) -> None:
    """Version `target`: the same weights as `source` (the test's truth, not the weights,
    makes it better or worse)."""
    folder = ws.model_dir(target)
    shutil.copytree(ws.model_dir(source), folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["version"], meta["parent"] = target, source
    (folder / "meta.json").write_text(json.dumps(meta))


def day_start(index: int) -> float:
    return datetime(2024, 1, 5 + index, tzinfo=timezone.utc).timestamp()


class Traffic:
    """A day's requests over HTTP and clicks drawn from the planted truth: the click rate is
    BASE_CTR times the factor of the version that answered."""

    def __init__(self, client: Client, items: list[dict], factors: dict[int, float]) -> None:
        self.client, self.items, self.factors = client, items, factors
        self.rng = np.random.default_rng(11)
        self.failures: list[str] = []
        self.posted = 0

    def day(self, index: int) -> None:
        start = day_start(index) + 3600
        clicks = []
        for r in range(REQUESTS_PER_DAY):
            when = start + r * 60.0  # 900 requests over 15 hours
            body = {
                "request_id": f"d{index}-r{r}",
                "time": when,
                "context": {"user_id": f"u{r % USERS}"},
                "candidates": [self.items[(r + k) % len(self.items)] for k in range(2)],
                "slots": 1,
            }
            status, answer = self.client.request("POST", "/score", body)
            if status != 200:
                self.failures.append(f"{status}: {answer}")
                continue
            factor = self.factors.get(answer["version"], 1.0)
            if self.rng.random() < BASE_CTR * factor:
                clicks.append(
                    {"impression_id": answer["slate"][0]["impression_id"], "time": when + 60}
                )
        if clicks:
            status, answer = self.client.request("POST", "/feedback", {"clicks": clicks})
            if status != 200:
                self.failures.append(f"feedback {status}: {answer}")
        self.posted += REQUESTS_PER_DAY


def nightly(ws: Workspace, index: int) -> dict:
    as_of = day_start(index + 1) + WINDOW_SLACK
    done = subprocess.run(
        [*RELOOP, "run", "--from-server", "-w", str(ws.root), "--as-of", str(as_of), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 4, 5), done.stderr[-2000:]
    return json.loads(done.stdout)


def start(ws: Workspace, version: int) -> str:
    done = subprocess.run(
        [
            *RELOOP,
            "experiment",
            "start",
            str(version),
            "--shares=0.5",
            "-w",
            str(ws.root),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["id"]


def experiment(ws: Workspace, experiment_id: str):
    with Registry(ws) as registry:
        return Experiments(registry).get(experiment_id), registry.live("main")


@pytest.mark.slow
def test_worse_rolled_back_better_promoted_equal_inconclusive(tmp_path, tiny_logs, sample_spec):
    ws = Workspace(tmp_path / "ws")
    spec = sample_spec.override("train", epochs=1)
    spec = spec.override("serving", flush_seconds=0.3, reload_seconds=0.2)
    spec = spec.override(
        "experiment",
        unit="user_id",
        shares=(0.5,),
        margin=0.0,
        min_units=20,
        planned_units=500,
        max_nights=2,
    )
    ingest(ws, spec, tiny_logs[:2])
    ws.write_json(spec.to_dict(), ws.stored_spec_path)
    with Registry(ws) as registry:
        train_version(ws, registry, spec, "2024-01-02")
        publish_live(ws, registry)
    for version in (2, 3, 4):
        plant_copy(ws, 1, version)
    items = (
        pl.read_parquet(tiny_logs[2])
        .select("item_id", "category", "hour", "device")
        .unique("item_id")
        .sort("item_id")
        .head(40)
        .to_dicts()
    )
    # v4's factor is None: the same as whichever version is live when it starts (equal)
    plan = [(2, 0.5, "rolled_back"), (3, 1.6, "promoted"), (4, None, "inconclusive")]
    outcomes, decided = {}, {}
    with ServerProcess(ws.root, ("--trust-client-time",), timeout=120) as server:
        client = Client(server.port)
        traffic = Traffic(client, items, {})
        index = 0
        for version, factor, expected in plan:
            _, live_now = experiment(ws, "none")
            traffic.factors[version] = factor or traffic.factors.get(live_now, 1.0)
            running = start(ws, version)
            wait_for(
                f"the server to route experiment {running}",
                lambda r=running: (client.health().get("experiment") or {}).get("experiment") == r,
                60,
            )
            traffic.day(index)
            for _ in range(3):  # each experiment ends within max_nights = 2
                wait_for("the day's logs", lambda: _logged(ws) >= traffic.posted, 60)
                nights = threading.Thread(target=traffic.day, args=(index + 1,))
                nights.start()  # tomorrow's traffic comes while the nightly run swaps
                summary = nightly(ws, index)
                nights.join()
                index += 1
                found, live = experiment(ws, running)
                if found.status != "running":
                    outcomes[version], decided[version] = found.status, (summary, live)
                    break
            assert outcomes.get(version) == expected, (version, outcomes, summary.get("experiment"))
        client.close()
        assert server.stop() in (0, -signal.SIGTERM)  # SIGTERM: logs written, then exit
    assert traffic.failures == []
    assert decided[3][1] == 3 or decided[3][0]["live_before"] == 3  # promoted: v3 went live
    rows = pl.read_parquet(ws.serving_logs / "impressions" / "*" / "*.parquet")
    assert rows.height == traffic.posted
    in_experiment = rows.filter(pl.col("experiment_id").is_not_null())
    assert in_experiment["experiment_arm"].null_count() == 0
    assert rows.filter(pl.col("experiment_id").is_null())["experiment_arm"].null_count() == (
        rows.height - in_experiment.height
    )
    with Registry(ws) as registry:
        store = Experiments(registry)
        for entry in store.recent(10):
            if entry.candidate not in (2, 3, 4):
                continue
            mine = in_experiment.filter(pl.col("experiment_id") == entry.id)
            pairs = set(mine.select("experiment_arm", "served_version").unique().iter_rows())
            assert pairs <= {("live", entry.live), ("candidate", entry.candidate)}
            assert store.looks(entry.id)[-1]["decision"] in ("rollback", "promote", "inconclusive")
    report = (ws.root / "reports" / "report.html").read_text(encoding="utf-8")
    assert "Online experiments" in report and "experiment lift" in report


def _logged(ws: Workspace) -> int:
    parts = sorted((ws.serving_logs / "impressions").glob("day=*/*.parquet"))
    return pl.scan_parquet(parts).select(pl.len()).collect().item() if parts else 0
