"""The served loop under chaos, with real processes on loopback: a load generator posts /score
(ranked and unranked) and /feedback while the server is SIGKILLed and restarted at seeded
random moments and `reloop run --from-server` runs on a schedule across two midnights. At the
end every impression answered 200 and written before its kill is in the logs exactly once, every
click is accounted for exactly once, no night failed, and the live version is one a night
trained. Bounded in requests and time; every address is 127.0.0.1."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import polars as pl
import pytest

from reloop_cli.columns import MAIN_CHAIN
from reloop_cli.experiments.live_server import HOST, free_port
from reloop_cli.serving.clickjoin import CLICK_FATES
from reloop_cli.store.registry import Registry
from tests.helpers import REPO

pytestmark = pytest.mark.slow

SEED = 27
DAY4 = 1_704_326_400.0  # 2024-01-04 00:00 UTC
FIELDS = ["user_id", "item_id", "category", "hour", "device", "position"]
FLUSH_SECONDS = 0.2
REQUESTS = 1_200
PACE_SECONDS = 0.015  # between requests: about 25 s of load, so kills fall seconds apart
START, END = DAY4 + 6 * 3_600, DAY4 + 2 * 86_400 + 3 * 3_600  # day 4 06:00 .. day 6 03:00
NIGHTS = [DAY4 + 18 * 3_600, DAY4 + 86_400 + 2.25 * 3_600, DAY4 + 2 * 86_400 + 2.25 * 3_600]
ENVIRONMENT = {
    "RELOOP_SERVING_FLUSH_SECONDS": str(FLUSH_SECONDS),
    "RELOOP_SERVING_RELOAD_SECONDS": "0.3",
    "RELOOP_GATE_MIN_CLICKS": "5",  # small days: judge on a few clicks
    "RELOOP_GATE_MAX_AUC_DROP": "1",  # and let a candidate through, so nights promote
    "RELOOP_GATE_MAX_LOGLOSS_RISE": "1",
    "RELOOP_TRAIN_EPOCHS": "1",
}


@dataclass
class Generation:
    """One server process: its port, and when it was killed (None: stopped by SIGTERM)."""

    process: subprocess.Popen
    port: int
    killed_at: float | None = None


@dataclass
class Ledger:
    """What the load generator saw answered 200, with the server generation and wall time."""

    impressions: dict[str, tuple[int, float]] = field(default_factory=dict)
    clicks: list[tuple[str, int, float]] = field(default_factory=list)


def reloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "reloop_cli", *args]


def start_server(ws) -> Generation:
    port = free_port()
    process = subprocess.Popen(
        [*reloop("serve", "-w", str(ws.root), "--port", str(port)), "--trust-client-time"],
        cwd=REPO,
        env={**os.environ, **ENVIRONMENT},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health/ready", timeout=1):
                return Generation(process, port)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not come up within 60 s")


def post(port: int, path: str, body: dict) -> dict | None:
    """The JSON answer of a 200, or None when the server is down or refused."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def nightly(ws, schedule: queue.Queue, results: list[dict]) -> None:
    """`reloop run --from-server --as-of T` for each T put on the schedule (None: stop)."""
    while (as_of := schedule.get()) is not None:
        run = subprocess.run(
            [*reloop("run", "--from-server", "--json", "-w", str(ws.root)), f"--as-of={as_of}"],
            cwd=REPO,
            env={**os.environ, **ENVIRONMENT},
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = json.loads(run.stdout) if run.stdout.strip() else {}
        results.append({"as_of": as_of, "code": run.returncode, "err": run.stderr, **out})


def read_logs(ws, kind: str) -> pl.DataFrame:
    files = sorted((ws.serving_logs / kind).rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f).select("impression_id", "ts") for f in files])


def test_the_served_loop_loses_nothing_under_kills_and_nights(published, tiny_logs):
    ws, _ = published
    rng = random.Random(SEED)
    rows = pl.read_parquet(tiny_logs[3]).select(FIELDS).to_dicts()
    kills = set(rng.sample(range(50, REQUESTS - 50), 4))
    schedule, runs = queue.Queue(), []
    night_thread = threading.Thread(target=nightly, args=(ws, schedule, runs))
    night_thread.start()
    generations = [start_server(ws)]
    ledger = Ledger()
    nights = list(NIGHTS)
    try:
        for index in range(REQUESTS):
            when = START + (END - START) * index / REQUESTS
            while nights and when >= nights[0]:
                schedule.put(nights.pop(0))  # cron fires; the load goes on meanwhile
            if index in kills:
                generations[-1].process.send_signal(signal.SIGKILL)
                generations[-1].killed_at = time.monotonic()
                generations[-1].process.wait(timeout=30)
                generations.append(start_server(ws))
            server, candidates = len(generations) - 1, rng.sample(rows, 10)
            body = {"candidates": candidates, "time": when}
            if rng.random() < 0.5:
                body["slots"] = 2
            time.sleep(PACE_SECONDS)
            answer = post(generations[-1].port, "/score", body)
            assert answer is not None, "a request to a running server failed"
            shown = answer["slate"] if "slate" in answer else answer["candidates"]
            for item in shown:
                ledger.impressions[item["impression_id"]] = (server, time.monotonic())
            if rng.random() < 0.4:
                delay = rng.choice([60, 60, 60, -30, 3 * 3_600])  # in window, before, after
                target = rng.choice([s["impression_id"] for s in shown] + ["never-served"])
                click = {"impression_id": target, "time": when + delay}
                if post(generations[-1].port, "/feedback", {"clicks": [click]}) is not None:
                    ledger.clicks.append((target, server, time.monotonic()))
    finally:
        generations[-1].process.send_signal(signal.SIGTERM)  # the last one ends gracefully
        generations[-1].process.wait(timeout=60)
        schedule.put(END + 2 * 86_400)  # a last night once every window has closed
        schedule.put(None)
        night_thread.join(timeout=600)

    # every impression answered 200 and written before its server's kill: logged exactly once
    impressions = read_logs(ws, "impressions")
    assert impressions["impression_id"].n_unique() == impressions.height  # never twice
    logged = set(impressions["impression_id"])
    assert logged <= set(ledger.impressions)  # nothing logged that was not answered

    def safe(server: int, at: float) -> bool:
        killed = generations[server].killed_at
        return killed is None or at < killed - FLUSH_SECONDS - 1.0

    settled = {i for i, (server, at) in ledger.impressions.items() if safe(server, at)}
    assert settled <= logged, f"{len(settled - logged)} answered impressions lost"
    assert len(settled) > 0.7 * len(ledger.impressions)  # the kills cut seconds, not the run
    clicks = read_logs(ws, "clicks")
    posted = [(i, s, at) for i, s, at in ledger.clicks if safe(s, at)]
    assert clicks.height >= len(posted)  # each written click row, and the last one's buffer

    # no night failed, every click is accounted for exactly once, the labels are the clicks'
    assert [r["code"] for r in runs if r["code"] not in (0, 4, 5)] == [], runs
    counted = sum(r["join"][fate] for r in runs for fate in CLICK_FATES)
    assert counted == clicks.height
    ingested = ws.scan_logs(ws.days()).collect()
    served = ingested.filter(pl.col("day") >= "2024-01-04")
    assert served["impression_id"].n_unique() == served.height == impressions.height
    shown_at = impressions.rename({"ts": "shown"})
    inside = (
        clicks.join(shown_at, on="impression_id")
        .filter((pl.col("ts") >= pl.col("shown")) & (pl.col("ts") <= pl.col("shown") + 1_800))
        .select("impression_id")
        .unique()
    )
    assert set(served.filter(pl.col("label") == 1)["impression_id"]) == set(inside["impression_id"])

    # each night trained the newest complete day, once; live is a version a night trained
    assert [r["day"] for r in runs] == ["2024-01-03", "2024-01-04", "2024-01-05", "2024-01-06"]
    with Registry(ws) as registry:
        trained = [v for v in registry.versions(MAIN_CHAIN) if v["version"] > 1]
        live = registry.live(MAIN_CHAIN)
    assert sorted(v["day"] for v in trained) == [r["day"] for r in runs]  # one version a day
    assert live in {v["version"] for v in trained}
