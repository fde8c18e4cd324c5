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
from concurrent.futures import ThreadPoolExecutor

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
def server(ws, *extra: str, env: dict[str, str] | None = None):
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
        env={**os.environ, "RELOOP_SERVING_FLUSH_SECONDS": "0.2", **(env or {})},
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


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the server sends before it closes the connection, and after how long."""
    started, data = time.monotonic(), b""
    sock.settimeout(seconds)
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data, time.monotonic() - started


def test_stalled_clients_are_cut_off_and_sigterm_ends_within_its_grace(published):
    """Reproduction: 200 clients stalled mid-header or mid-body held their sockets for good, and
    SIGTERM with one such client waited until the client left (51 s)."""
    ws, _ = published
    quick = {
        "RELOOP_SERVING_HEADER_TIMEOUT_SECONDS": "1",
        "RELOOP_SERVING_BODY_TIMEOUT_SECONDS": "1",
        "RELOOP_SERVING_SHUTDOWN_SECONDS": "2",
    }
    with server(ws, env=quick) as (process, port):
        heads = [socket.create_connection((HOST, port)) for _ in range(50)]
        for sock in heads:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        body = socket.create_connection((HOST, port))
        body.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"cand'
        )
        answers = [read_until_closed(sock, 10) for sock in [*heads, body]]
        assert all(data.startswith(b"HTTP/1.1 408") for data, _ in answers)
        assert max(seconds for _, seconds in answers) < 5
        assert b"serving.body_timeout_seconds" in answers[-1][0]
        assert post(port, "/score", {"candidates": CANDIDATES})["version"] == 1  # still serving
        stalled = socket.create_connection((HOST, port))
        stalled.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        time.sleep(0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert time.monotonic() - started < 2 * 2 + 2  # twice the grace, and the start-up slack
    for sock in [*heads, body, stalled]:
        sock.close()
    assert len(impressions(ws)) == 10  # the one request answered 200 was written on the way out


def test_metrics_sum_over_workers(published):
    """Reproduction: with --workers N each /metrics scrape showed one worker's counts."""
    ws, _ = published
    with server(ws, "--workers", "2") as (process, port):
        boots, sent = set(), 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(20):  # concurrent connections, until both workers have answered
                answers = list(
                    pool.map(lambda _: post(port, "/score", {"candidates": CANDIDATES}), range(16))
                )
                sent += len(answers)
                boots |= {answer["request_id"][:12] for answer in answers}
                if len(boots) == 2:
                    break
        scrapes = []
        for _ in range(6):
            with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
                scrapes.append(r.read().decode())
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert len(boots) == 2, boots  # both workers answered some of the requests...
    line = 'reloop_requests_total{route="score",status="200"} '
    counts = {float(t.split(line)[1].split()[0]) for t in scrapes}
    assert counts == {float(sent)}  # ...and every scrape counts them all, whoever answers it


def test_a_port_in_use_is_one_line_and_leaves_no_boot_file(published):
    """Reproduction: `--port 70000` printed a 90-line traceback, and a serve that could not
    bind still wrote a boot file."""
    ws, _ = published
    runner = CliRunner()
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = runner.invoke(app, ["serve", "-w", str(ws.root), "--port", str(port)])
    assert busy.exit_code == 2 and "cannot listen there" in busy.output
    assert len(busy.output.strip().splitlines()) == 1
    wrong = runner.invoke(app, ["serve", "-w", str(ws.root), "--port", "70000"])
    assert wrong.exit_code == 2 and "65535" in wrong.output and "Traceback" not in wrong.output
    assert not (ws.serving_logs / "boots").exists()
