"""`reloop simulate --closed-loop --over-http`: the closed loop with real processes, as production
runs it, set against the in-process closed loop of the same world and policy.

One workspace (`over-http/world-W/`), two processes that never wait for each other:
1. `reloop serve --trust-client-time` serves it; before any version is published it serves at
   random (`serving.cold_start = "random"`), as the in-process loop's day 0 does;
2. each day a client replays the world's requests (the same requests, candidates and click
   draws as `closed_loop.draw_requests` gives the in-process loop) as POST /score with `slots`,
   draws each shown item's click from the world's true probability at its position, and posts
   the clicks to /feedback a minute after the impression;
3. each night `reloop run --from-server --as-of <the day's end + the attribution window>`
   joins the clicks onto the impressions, trains, gates and publishes; the client waits until
   /health names the new live version before the next day.
Then the in-process closed loop serves the same requests with the same arm, and the two online
CTRs are compared request by request (paired: the same requests and click draws), day by day
and pooled over the days trained versions served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import polars as pl

from reloop_cli.errors import BadInput
from reloop_cli.evaluation import statistics
from reloop_cli.experiments.closed_loop import ClosedLoopConfig, draw_requests, run_closed_loop
from reloop_cli.experiments.live_server import Client, ServerProcess, wait_for
from reloop_cli.experiments.online import ClosedLoopResult, difference, online_figures
from reloop_cli.experiments.synth import DEVICES, World
from reloop_cli.experiments.traffic import Requests, true_probabilities
from reloop_cli.serving.logs import CLICKS, IMPRESSIONS
from reloop_cli.spec.pipeline import Spec
from reloop_cli.spec.serving import duration_seconds
from reloop_cli.store.stored_spec import remember_spec
from reloop_cli.store.workspace import Workspace

CLICK_DELAY_SECONDS = 60.0  # a click reaches /feedback a minute after its impression
RUN_EXIT_CODES = {0, 4, 5}  # done or nothing new, gate refused, gate inconclusive


@dataclass(frozen=True)
class OverHttpConfig:
    """The in-process loop's settings (world, days, traffic, policy) and the arm served."""

    closed: ClosedLoopConfig
    arm: str = "reloop"
    timeout_seconds: float = 300.0  # for a server start, a flush, a swap, a nightly run


@dataclass
class OverHttpResult:
    """Per day: what the server served (CTR, versions) beside what the in-process loop did."""

    config: OverHttpConfig
    days: list[str]
    online: list[dict]  # per day: online figures over HTTP, the versions that served
    runs: list[dict]  # per night: the run's outcome, click join and live version after
    in_process: ClosedLoopResult
    differences: list[dict]  # per day: CTR over HTTP minus in process (paired by request)
    server_exit: int = 0

    def pooled(self) -> statistics.Estimate:
        """The CTR difference pooled over the days trained versions served (day 1 on)."""
        return statistics.pooled([statistics.Estimate(**d) for d in self.differences[1:]])

    def to_dict(self) -> dict:
        pooled = self.pooled()
        return {
            "config": {**asdict(self.config.closed), "arm": self.config.arm},
            "days": self.days,
            "over_http": self.online,
            "in_process": self.in_process.online[self.config.arm],
            "runs": self.runs,
            "differences": self.differences,
            "pooled": {"ctr": pooled.to_dict(), "verdict": statistics.verdict(pooled)},
            "server_exit": self.server_exit,
        }


def served_loop_spec(spec: Spec, config: OverHttpConfig) -> Spec:
    """The spec the workspace is served and trained with: the arm's loss, the loop's policy,
    random serving before the first version, and quick flushes and swaps."""
    policy = config.closed.policy
    kind = "softmax" if policy.kind == "softmax" else "epsilon"
    spec = spec.override("train", loss=config.arm)
    return spec.override(
        "serving",
        policy=kind,
        epsilon=policy.epsilon,
        temperature=policy.temperature,
        cold_start="random",
        seed=config.closed.seed,
        position_field="position",
        flush_seconds=0.5,
        reload_seconds=0.5,
    )


def run_over_http(
    root: Workspace,
    spec: Spec,
    config: OverHttpConfig,
    on_step: Callable[[str], None] = lambda _: None,
) -> OverHttpResult:
    """Both loops in world `config.closed.world`, under `root/over-http/world-W/` (replaced:
    the folder is this command's own); call under `root`'s lock."""
    closed = config.closed.validate([config.arm])
    ws = root.over_http_world(closed.world)
    served = serve_days(ws, served_loop_spec(spec, config), closed, config.timeout_seconds, on_step)
    on_step("the same world and policy in process")
    in_process = run_closed_loop(
        Workspace(ws.root / "in-process"), spec, [config.arm], closed, on_step=on_step
    )
    base = in_process.request_clicks[config.arm]
    differences = [
        difference(base[i], served.clicks[i], True, closed.policy.slots)
        for i in range(len(served.days))
    ]
    return OverHttpResult(
        config,
        served.days,
        served.online,
        served.runs,
        in_process,
        differences,
        served.server_exit,
    )


@dataclass
class ServedDays:
    """What the world's days over HTTP gave: per day the online figures and each request's
    clicks, per night the run's summary, and how the server stopped."""

    days: list[str] = field(default_factory=list)
    online: list[dict] = field(default_factory=list)
    clicks: list[np.ndarray] = field(default_factory=list)  # per day: clicks of each request
    runs: list[dict] = field(default_factory=list)
    server_exit: int = 0


def serves_live(client: Client, run: dict) -> bool:
    """The server serves the live version tonight's run left (any, when none is live)."""
    live = run.get("live_after")
    return live is None or client.health().get("version") == live


def serve_days(
    ws: Workspace,
    served: Spec,
    closed: ClosedLoopConfig,
    timeout: float,
    on_step: Callable[[str], None],
    before_day: Callable[[World, Requests], None] = lambda world, requests: None,
    before_night: Callable[[], None] = lambda: None,
    after_night: Callable[[dict, str], None] = lambda run, day: None,
    ready: Callable[[Client, dict], bool] = serves_live,
) -> ServedDays:
    """The served loop in `ws` (replaced: the folder is the caller's own): a `reloop serve`
    process, each day the world's requests over HTTP and their clicks, each night `reloop run
    --from-server`; then wait until the server is `ready` for the next day. `before_day` sees
    the day's requests before they are served, `before_night` runs before each nightly run,
    `after_night` sees its summary."""
    if ws.root.exists():
        shutil.rmtree(ws.root)
    ws.root.mkdir(parents=True)
    remember_spec(ws, served)
    world = World(closed.world_config())
    window = duration_seconds(served.data.attribution_window) + served.serving.flush_seconds
    found = ServedDays()
    with ServerProcess(ws.root, ("--trust-client-time",), timeout=timeout) as server:
        client = Client(server.port)
        try:
            posted = 0
            for index in range(closed.days + 1):
                day = (np.datetime64(world.config.start_date) + np.timedelta64(index, "D")).astype(
                    str
                )
                found.days.append(day)
                requests = draw_requests(world, index, day, closed)
                before_day(world, requests)
                on_step(f"day {index} ({day}): {len(requests):,} requests over HTTP")
                record, clicks, posted_today = serve_day(client, world, requests, closed)
                posted += posted_today
                found.online.append(record)
                found.clicks.append(clicks.sum(axis=1))
                expected = len(requests) * closed.policy.slots
                wait_for(
                    f"the server's logs of {day}",
                    partial(logged, ws, day, posted, expected),
                    timeout,
                )
                if index < closed.days:
                    as_of = world.day_start(index + 1) + window + 1
                    on_step(f"night {index}: reloop run --from-server --as-of {as_of}")
                    before_night()
                    run = nightly_run(ws, as_of, timeout)
                    found.runs.append(run)
                    after_night(run, day)
                    wait_for(
                        "the server to serve what tonight's run published",
                        partial(ready, client, run),
                        timeout,
                    )
                world.advance(index + 1)
        finally:
            client.close()
        found.server_exit = server.stop()
    return found


def _request_body(world: World, requests: Requests, row: int, slots: int) -> dict:
    items = requests.items[row]
    columns = world.id_columns(np.full(items.size, requests.user[row]), items)
    return {
        "request_id": f"{requests.day}-r{requests.ids[row]}",
        "time": float(requests.ts[row]),
        "context": {
            "user_id": columns["user_id"][0],
            "hour": int(requests.hour[row]),
            "device": str(DEVICES[requests.device[row]]),
        },
        "candidates": [
            {"item_id": item, "category": category}
            for item, category in zip(columns["item_id"], columns["category"], strict=True)
        ],
        "slots": slots,
    }


def serve_day(
    client: Client, world: World, requests: Requests, closed: ClosedLoopConfig
) -> tuple[dict, np.ndarray, int]:
    """One day over HTTP: score every request, click from the truth, post the clicks."""
    slots = closed.policy.slots
    shown = np.zeros((len(requests), slots), np.int64)
    impression_ids: list[list[str]] = []
    versions: set = set()
    arms = np.full(len(requests), "", dtype=object)  # the experiment arm that served, if any
    for row in range(len(requests)):
        answer = client.post("/score", _request_body(world, requests, row, slots))
        slate = answer["slate"]
        shown[row] = [entry["candidate"] for entry in slate]
        impression_ids.append([entry["impression_id"] for entry in slate])
        versions.add(answer["version"])
        arms[row] = (answer.get("experiment") or {}).get("arm", "")
    truth = true_probabilities(world, requests, shown)
    clicks = requests.uniforms < truth
    batch = []
    for row, column in zip(*np.nonzero(clicks), strict=True):
        when = float(requests.ts[row]) + CLICK_DELAY_SECONDS
        batch.append({"impression_id": impression_ids[row][column], "time": when})
        if len(batch) == 1_000:
            client.post("/feedback", {"clicks": batch})
            batch = []
    if batch:
        client.post("/feedback", {"clicks": batch})
    items = requests.items[np.arange(len(requests))[:, None], shown]
    record = {
        "day": requests.day,
        "versions": sorted(versions, key=lambda v: -1 if v is None else v),
        "requests": len(requests),
        **online_figures(clicks, truth, items, np.unique(requests.items)),
    }
    if any(arms):  # an experiment ran: what each arm's requests got
        record["arms"] = {
            str(arm): {
                "requests": int((arms == arm).sum()),
                "ctr": float(clicks[arms == arm].mean()),
                "expected_ctr": float(truth[arms == arm].mean()),
            }
            for arm in sorted(set(arms))
        }
    return record, clicks, int(clicks.sum())


def _rows(parts: list) -> int:
    return pl.scan_parquet(parts).select(pl.len()).collect().item() if parts else 0


def logged(ws: Workspace, day: str, clicks: int, impressions: int) -> bool:
    """Every impression of `day` and every click posted so far is on disk."""
    logs = ws.serving_logs
    shown = _rows(sorted((logs / IMPRESSIONS / f"day={day}").glob("*.parquet")))
    clicked = _rows(sorted((logs / CLICKS).glob("day=*/*.parquet")))
    return shown == impressions and clicked == clicks


def nightly_run(ws: Workspace, as_of: float, timeout: float) -> dict:
    """`reloop run --from-server` as cron would start it; its JSON summary."""
    command = [
        sys.executable,
        "-m",
        "reloop_cli",
        "run",
        "--from-server",
        "-w",
        str(ws.root),
        "--as-of",
        str(as_of),
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode not in RUN_EXIT_CODES:
        last = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BadInput(f"reloop run --from-server exited {done.returncode}: {last[0]}")
    summary = json.loads(done.stdout)
    return {"exit_code": done.returncode, **_brief(summary)}


def _brief(summary: dict) -> dict:
    keep = (
        "outcome",
        "candidate",
        "live_before",
        "live_after",
        "published",
        "join",
        "experiment",
        "experiment_started",
    )
    brief = {key: summary.get(key) for key in keep}
    brief["gate"] = (summary.get("gate") or {}).get("outcome")  # passed, refused, inconclusive
    return brief
