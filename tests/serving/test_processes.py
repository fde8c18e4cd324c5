"""`reloop serve` as a real process on loopback: a SIGKILL leaves every log file whole, a restart
appends and never reuses an impression id, SIGTERM writes the buffer, and the nightly run and the
server never wait for each other. Every request loop here is bounded in count and time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import polars as pl
import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from tests.helpers import REPO

pytestmark = pytest.mark.slow  # server processes

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def post(port: int, path: str, body: dict, timeout: float = 10) -> dict:
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


@contextlib.contextmanager
def server(ws, *extra: str):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reloop_cli",
            "serve",
            "-w",
            str(ws.root),
            "--port",
            str(port),
            *extra,
        ],
        cwd=REPO,
        env={**os.environ, "RELOOP_SERVING_FLUSH_SECONDS": "0.2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"server did not come up: {process.stderr.read()[-2000:]}")
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


CANDIDATES = [{"item_id": f"{i:06d}", "user_id": "00002"} for i in range(10)]


def impressions(ws) -> pl.DataFrame:
    files = sorted((ws.serving_logs / "impressions").rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])  # each one must read whole


def test_a_killed_server_leaves_whole_files_and_a_restart_appends(published):
    ws, _ = published
    with server(ws) as (process, port):
        for _ in range(20):
            post(port, "/score", {"candidates": CANDIDATES})
        time.sleep(1.0)  # past the flush interval: these are on disk
        for _ in range(5):
            post(port, "/score", {"candidates": CANDIDATES})
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    first = impressions(ws)
    before = {p.name for p in (ws.serving_logs / "impressions").rglob("*.parquet")}
    assert first.height >= 200 and not list(ws.serving_logs.rglob(".tmp-*"))
    with server(ws) as (process, port):
        for _ in range(10):
            post(port, "/score", {"candidates": CANDIDATES})
        process.send_signal(signal.SIGTERM)  # the buffer is written on the way out
        process.wait(timeout=30)
    after = impressions(ws)
    files = {p.name for p in (ws.serving_logs / "impressions").rglob("*.parquet")}
    assert before < files  # appended, nothing replaced
    assert after.height == first.height + 100
    assert after["impression_id"].n_unique() == after.height  # unique across both starts
    boots = list((ws.serving_logs / "boots").glob("*.json"))
    assert len(boots) == 2


def test_the_run_and_the_server_never_wait_for_each_other(published):
    ws, _ = published
    with server(ws) as (_, port):
        with ws.lock():  # as a nightly run holds it for minutes
            started = time.time()
            answer = post(port, "/score", {"candidates": CANDIDATES}, timeout=5)
            assert answer["version"] == 1 and time.time() - started < 5
        # and a run with the server writing logs beside it finishes, and is served next
        runner = CliRunner()
        trained = runner.invoke(
            app, ["train", "--day", "2024-01-03", "-w", str(ws.root), "--epochs", "1"]
        )
        assert trained.exit_code == 0, trained.output
        deadline = time.time() + 30
        while (
            time.time() < deadline
            and post(port, "/score", {"candidates": CANDIDATES})["version"] != 2
        ):
            time.sleep(0.3)
        assert post(port, "/score", {"candidates": CANDIDATES})["version"] == 2
