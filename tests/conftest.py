"""Shared fixtures: a tiny simulated log, a small fast spec, and the Frappe files if present."""

from __future__ import annotations

from pathlib import Path

import pytest

from reloop_cli.experiments.synth import SynthConfig, synthesize
from reloop_cli.spec.pipeline import Spec, load_spec
from reloop_cli.store.workspace import Workspace
from tests.helpers import FRAPPE, REPO


@pytest.fixture(scope="session")
def tiny_logs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four simulated days of 3,000 impressions each (same seed, same files)."""
    out = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        days=4, rows_per_day=3_000, seed=7, users=200, initial_items=150, new_items_per_day=10
    )
    return synthesize(config, out)


@pytest.fixture()
def sample_spec() -> Spec:
    """The bundled sample spec, shrunk so a version trains in well under a second, with the
    simplest loop settings (from scratch, ỹ_last re-scored by the parent); tests of warm start
    and of served ỹ_last switch those on themselves."""
    spec = load_spec(REPO / "pipelines" / "sample.toml")
    spec = spec.override("model", embedding_dim=8, hidden_units=(16,))
    return spec.override(
        "train",
        epochs=2,
        batch_size=256,
        learning_rate=0.01,
        window_days=2,
        alpha=0.5,
        warm_start=False,
        last_source="parent",
        embedding_l2=0.0,
    )


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def frappe_dir() -> Path:
    if not (FRAPPE / "frappe.test.libfm").exists():
        pytest.skip(f"Frappe files not found at {FRAPPE} (they are not redistributable)")
    return FRAPPE
