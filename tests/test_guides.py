"""The guides run as written: every ```sh block of docs/guides/ is run by bash, as a new user
would paste it after the README's first command, in a folder that holds what a fresh clone does
(pipelines/, sample_data/, and the virtual environment as .venv/). Port 8000 becomes a free
port, so the test never meets a server of the machine's, and training stops after 2 epochs
(RELOOP_TRAIN_EPOCHS, the spec's own override) to keep the suite short; the commands are the
guide's, word for word."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reloop_cli.experiments.live_server import free_port
from tests.helpers import REPO

pytestmark = pytest.mark.slow  # whole commands, a server among them
GUIDES = sorted((REPO / "docs" / "guides").glob("*.md"))
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, str]]:
    return [
        (f"{path.stem}-{index}", block)
        for path in GUIDES
        for index, block in enumerate(BLOCK.findall(path.read_text(encoding="utf-8")))
    ]


def test_the_guides_have_blocks_to_run():
    names = {name.rsplit("-", 1)[0] for name, _ in blocks()}
    assert {"serving", "cron", "your-logs"} <= names


@pytest.mark.parametrize("name,block", blocks(), ids=[name for name, _ in blocks()])
def test_a_guide_block_runs_as_written(tmp_path, name, block):
    for shared in ("pipelines", "sample_data"):
        (tmp_path / shared).symlink_to(REPO / shared)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    script = block.replace("8000", str(free_port()))
    run = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "RELOOP_SERVING_FLUSH_SECONDS": "0.2", "RELOOP_TRAIN_EPOCHS": "2"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, f"{name}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
