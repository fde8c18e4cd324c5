"""Optional MLflow tracking (`--mlflow URI`, `pip install 'reloop[mlflow]'`): teams that already
track runs in MLflow see reloop's there. The core never imports MLflow.

- `simulate`: one run per arm (under one parent run), per-day next-day AUC/Logloss logged with
  `step` = the day's index, the arm's last version as an artifact.
- `run` (cron): one run per cycle with the candidate's holdout metrics and the gate's verdict, the
  candidate as an artifact and as a version of the registered model `reloop-<spec name>`; the
  version that is live carries the registry alias `live` (MLflow's replacement for stages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reloop_cli.errors import BadInput
from reloop_cli.operations.cycle import CycleOutcome, CycleResult
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace

LIVE_ALIAS = "live"


def _mlflow(uri: str) -> Any:
    try:
        import mlflow
    except ImportError:
        raise BadInput("MLflow tracking needs MLflow: pip install 'reloop[mlflow]'") from None
    mlflow.set_tracking_uri(uri)
    return mlflow


def _use_experiment(mlflow: Any, uri: str, spec: Spec) -> None:
    """Select the experiment `reloop-<spec name>`, creating it if needed. With a local SQLite
    store its artifacts go beside the database file (`mlartifacts/`): MLflow's own default for
    a database URI is `./mlruns` in whatever folder the command happens to run from."""
    name = f"reloop-{spec.name}"
    if mlflow.get_experiment_by_name(name) is None:
        location = None  # a tracking server decides for itself
        if uri.startswith("sqlite:///"):
            database = Path(uri.removeprefix("sqlite:///")).resolve()
            location = (database.parent / "mlartifacts").as_uri()
        mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


def _params(spec: Spec) -> dict[str, Any]:
    flat = {}
    for section in ("model", "train"):
        for key, value in spec.to_dict()[section].items():
            flat[f"{section}.{key}"] = value
    return flat


def track_simulation(uri: str, ws: Workspace, spec: Spec, result: Any) -> None:
    """Log a finished simulation: a parent run, one child run per arm."""
    mlflow = _mlflow(uri)
    _use_experiment(mlflow, uri, spec)
    with mlflow.start_run(run_name="simulate"):
        mlflow.log_params({"days": len(result.days), "arms": ",".join(result.arms)})
        for arm, entry in result.arms.items():
            with mlflow.start_run(run_name=f"simulate-{arm}", nested=True):
                mlflow.log_params({**_params(spec), "arm": arm})
                for step, day in enumerate(entry.days, start=1):
                    mlflow.log_metrics({"auc": day["auc"], "logloss": day["logloss"]}, step=step)
                mlflow.log_metrics({"mean_auc": entry.mean_auc, "mean_logloss": entry.mean_logloss})
                last = entry.days[-1]["version"]
                mlflow.set_tag("reloop.last_version", last)
                mlflow.log_artifacts(str(ws.model_dir(last)), artifact_path="model")


def track_cycle(uri: str, ws: Workspace, spec: Spec, result: CycleResult) -> None:
    """Log one cron cycle; register the candidate and move the `live` alias when promoted."""
    if result.candidate is None or result.gate is None:
        return  # nothing was trained or judged (nothing new, dry run)
    mlflow = _mlflow(uri)
    _use_experiment(mlflow, uri, spec)
    name = f"reloop-{spec.name}"
    with mlflow.start_run(run_name=f"run-{result.day}") as run:
        mlflow.log_params({**_params(spec), "day": result.day})
        mlflow.log_metrics(
            {
                f"holdout_{k}": v
                for k, v in result.gate.candidate.to_dict().items()
                if isinstance(v, float | int)
            }
        )
        mlflow.set_tags(
            {
                "reloop.version": result.candidate,
                "reloop.outcome": result.outcome.value,
                "reloop.forced": result.gate.forced,
            }
        )
        mlflow.log_artifacts(str(ws.model_dir(result.candidate)), artifact_path="model")
        client = mlflow.MlflowClient()
        try:
            client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(name)
        model_version = client.create_model_version(
            name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={"reloop.version": str(result.candidate), "reloop.outcome": result.outcome.value},
        )
        if result.outcome == CycleOutcome.PROMOTED:
            client.set_registered_model_alias(name, LIVE_ALIAS, model_version.version)
