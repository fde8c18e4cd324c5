"""A spec edited between versions (a tuned spec goes live): the nightly cycle keeps working and
says how the new version started."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.errors import EXIT_GATE_REFUSED
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from tests.helpers import Feed, write_spec

pytestmark = pytest.mark.slow  # three trained versions


def edited(folder, file_name: str, **changes: str):
    """The test spec with warm start on and `[model]` lines replaced (`key = value` text)."""
    text = write_spec(folder, "base").read_text()
    text = text.replace("seed = 3\n", "seed = 3\nwarm_start = true\n")
    for key, value in changes.items():
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
        at = lines.index("[model]") + 1
        text = "\n".join([*lines[:at], f"{key} = {value}", *lines[at:]]) + "\n"
    path = folder / f"{file_name}.toml"
    path.write_text(text)
    return path


def test_a_cycle_after_embedding_dim_or_model_changed_trains_and_says_how(tmp_path, tiny_logs):
    ws, feed, runner = tmp_path / "ws", Feed(tiny_logs, tmp_path / "drop"), CliRunner()

    def cycle(spec):
        result = runner.invoke(
            app, ["run", "--spec", str(spec), "--logs", str(feed.folder), "-w", str(ws), "--json"]
        )
        assert result.exit_code in (0, EXIT_GATE_REFUSED), result.output  # trained and judged
        return json.loads(result.stdout)

    feed.arrive(2)
    first = cycle(edited(tmp_path, "v1"))
    feed.arrive(3)
    wider = cycle(edited(tmp_path, "wider", embedding_dim="16"))
    assert wider["outcome"] in ("promoted", "rejected")
    assert wider["started"].startswith(f"warm start from v{first['candidate']}, partial")
    assert "model.embedding_dim 8 -> 16" in wider["started"]
    feed.arrive(4)
    other = cycle(edited(tmp_path, "other", name='"dcn"', embedding_dim="16"))
    assert other["started"].startswith("from scratch, not from v")
    assert "model.name deepfm -> dcn" in other["started"]
    with Registry(Workspace(ws)) as registry:
        meta = registry.version_meta(other["candidate"])
    assert meta["started"]["mode"] == "scratch" and meta["warm_start"] is False
    assert meta["spec"]["model"]["name"] == "dcn"


def test_an_unchanged_spec_warm_starts_in_full(tmp_path, tiny_logs):
    ws, feed, runner = tmp_path / "ws", Feed(tiny_logs, tmp_path / "drop"), CliRunner()
    spec = edited(tmp_path, "same")
    for count in (2, 3):
        feed.arrive(count)
        result = runner.invoke(
            app, ["run", "--spec", str(spec), "--logs", str(feed.folder), "-w", str(ws), "--json"]
        )
        assert result.exit_code == 0, result.output
    started = json.loads(result.stdout)["started"]
    assert started == "warm start from v1"
