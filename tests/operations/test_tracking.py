"""Optional MLflow tracking: per-day metrics with steps, artifacts, and the `live` alias."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Feed, cycle, write_spec

pytestmark = pytest.mark.slow  # subprocesses and ranks: seconds each

mlflow = pytest.importorskip("mlflow")


def test_simulate_logs_each_arm_per_day(tmp_path, tiny_logs, sample_spec):
    from typer.testing import CliRunner

    from reloop_cli.cli import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(tmp_path, "spec")
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            *map(str, tiny_logs),
            "--spec",
            str(spec),
            "--days",
            "2",
            "--arms",
            "bce,reloop",
            "-w",
            str(tmp_path / "ws"),
            "--mlflow",
            uri,
        ],
    )
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("reloop-cron-test")
    runs = client.search_runs([experiment.experiment_id])
    arms = {r.data.params.get("arm"): r for r in runs if "arm" in r.data.params}
    assert set(arms) == {"bce", "reloop"}
    history = client.get_metric_history(arms["reloop"].info.run_id, "auc")
    assert [m.step for m in history] == [1, 2]
    assert all(0.5 < m.value < 1 for m in history)
    artifacts = [a.path for a in client.list_artifacts(arms["bce"].info.run_id, "model")]
    assert "model/weights.pt" in artifacts
    # Artifacts sit beside the database, not in whatever folder the command ran from.
    assert arms["bce"].info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert (tmp_path / "mlartifacts").is_dir() and not (Path.cwd() / "mlruns").exists()


def test_cron_cycles_register_versions_and_move_the_live_alias(tmp_path, tiny_logs):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec, feed, ws = (
        write_spec(tmp_path, "spec"),
        Feed(tiny_logs, tmp_path / "drop"),
        tmp_path / "w",
    )
    for count in (2, 3):
        feed.arrive(count)
        result = cycle(ws, spec, feed, "--mlflow", uri)
        assert result.returncode == 0, result.stderr
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    live = client.get_model_version_by_alias("reloop-cron-test", "live")
    assert live.tags["reloop.version"] == "2"
    assert len(client.search_model_versions("name='reloop-cron-test'")) == 2
