"""A `reloop serve` process on loopback, and a small client for it: what the loop over HTTP and
the serving benchmark talk to. Every wait here is bounded in time; the server is stopped with
SIGTERM (it writes its buffered logs) and killed only if it does not stop.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from reloop_cli.errors import BadInput

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Client:
    """One keep-alive HTTP connection to a server on loopback; JSON in, JSON out."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.connection = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(self, method: str, path: str, body: dict | bytes | None = None) -> tuple[int, dict]:
        """(status, JSON answer); a body given as bytes is sent as it is (pre-encoded)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):  # a connection the server closed while idle is opened again
            try:
                self.connection.request(method, path, body=data, headers=headers)
                answer = self.connection.getresponse()
                return answer.status, _json_or_text(answer.read())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict) -> dict:
        status, answer = self.request("POST", path, body)
        if status != 200:
            raise BadInput(f"POST {path}: HTTP {status}: {answer.get('error', answer)}")
        return answer

    def health(self) -> dict:
        return self.request("GET", "/health")[1]

    def close(self) -> None:
        self.connection.close()


def _json_or_text(body: bytes) -> dict:
    """A JSON object, or the text of a body that is not one (MLflow's /ping says "\n")."""
    try:
        parsed = json.loads(body) if body.strip() else {}
    except ValueError:
        return {"text": body.decode("utf-8", "replace")}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def wait_for(what: str, ready: Callable[[], bool], timeout: float, every: float = 0.1) -> None:
    """Poll `ready` until it holds, or fail after `timeout` seconds saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(every)
    raise BadInput(f"timed out after {timeout:.0f} s waiting for {what}")


class ServerProcess:
    """`reloop serve -w WORKSPACE` as a child process on a free loopback port."""

    def __init__(
        self,
        workspace: Path,
        extra: tuple[str, ...] = (),
        environment: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.workspace, self.extra, self.timeout = workspace, extra, timeout
        self.environment = environment or {}
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.stderr_path = workspace / "serving" / f"server-{self.port}.log"

    def __enter__(self) -> ServerProcess:
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "reloop_cli",
            "serve",
            "-w",
            str(self.workspace),
            "--port",
            str(self.port),
            *self.extra,
        ]
        with open(self.stderr_path, "w", encoding="utf-8") as stderr:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **self.environment},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            wait_for("the server to answer /health", self._answers, self.timeout, every=0.2)
        except BadInput:
            self.stop()
            raise BadInput(f"reloop serve did not start: {self.tail()}") from None
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise BadInput(f"reloop serve exited ({self.process.returncode}): {self.tail()}")
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                pass
        except OSError:
            return False
        client = Client(self.port, timeout=2)
        try:
            return client.request("GET", "/health")[0] == 200
        except OSError:
            return False
        finally:
            client.close()

    def tail(self) -> str:
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return text.strip().splitlines()[-1] if text.strip() else "(no output)"

    def stop(self) -> int:
        """SIGTERM (the buffered logs are written), then wait; kill if it does not stop."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode

    def __exit__(self, *exc) -> None:
        self.stop()
