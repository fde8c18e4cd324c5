"""The command line: one-line errors with exit codes, JSON on stdout, the lock."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.errors import EXIT_BAD_INPUT, EXIT_LOCKED
from tests.helpers import REPO, run_exported, workspace_files

runner = CliRunner()
SAMPLE_SPEC = str(REPO / "pipelines" / "sample.toml")


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture()
def ingested(ws, tiny_logs):
    result = invoke("ingest", *map(str, tiny_logs), "--spec", SAMPLE_SPEC, "-w", str(ws.root))
    assert result.exit_code == 0, result.output
    return ws


def test_ingest_missing_file_is_one_line_and_writes_nothing(ws, tmp_path):
    result = invoke("ingest", str(tmp_path / "gone.csv"), "--spec", SAMPLE_SPEC, "-w", str(ws.root))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "gone.csv: file not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert workspace_files(ws) == []


@pytest.mark.parametrize(
    "options,message",
    [
        (["--loss", "focal"], "'focal' is not one of bce, kd, reloop"),
        (["--alpha", "1.5"], "alpha: 1.5 is outside [0, 1]"),
        (["--alpha", "-0.1"], "alpha: -0.1 is outside [0, 1]"),
    ],
)
def test_bad_training_options_exit_non_zero_and_write_nothing(ingested, options, message):
    before = workspace_files(ingested)
    result = invoke("train", "--day", "2024-01-02", "-w", str(ingested.root), *options)
    assert result.exit_code == EXIT_BAD_INPUT
    assert message in result.output
    assert workspace_files(ingested) == before


def test_train_score_eval_print_json(ingested):
    ws = str(ingested.root)
    trained = json.loads(invoke("train", "--day", "2024-01-02", "-w", ws, "--json").stdout)
    assert trained["version"] == 1 and trained["loss"] == "bce"
    scored = json.loads(
        invoke("score", "-v", "1", "--day", "2024-01-03", "-w", ws, "--json").stdout
    )
    assert scored["rows"] == 3_000
    evaluated = json.loads(
        invoke("eval", "-v", "1", "--day", "2024-01-03", "-w", ws, "--json").stdout
    )
    assert evaluated["metrics"]["auc"] > 0.55
    assert set(evaluated["metrics"]) >= {"auc", "logloss", "rows", "ctr", "mean_pctr"}


@pytest.mark.slow
def test_simulate_json_has_the_documented_shape(ingested):
    result = invoke(
        "simulate", "--days", "2", "--arms", "bce,kd,reloop", "-w", str(ingested.root), "--json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["days"] == ["2024-01-02", "2024-01-03"]
    for arm in ("bce", "kd", "reloop"):
        entry = payload["arms"][arm]
        assert [d["day"] for d in entry["days"]] == payload["days"]
        assert entry["mean_auc"] == pytest.approx(sum(d["auc"] for d in entry["days"]) / 2)
        assert "logloss" in entry["days"][0] and "mean_logloss" in entry
    # Reproduction: right after simulate, `reloop status` said "live version: none" and the
    # report "No versions in the main chain yet" beside the versions simulate made.
    status = json.loads(invoke("status", "-w", str(ingested.root), "--json").stdout)
    chains = {c["chain"]: c for c in status["chains"]}
    assert {"simulate-bce", "simulate-kd", "simulate-reloop"} <= set(chains)
    assert all(chains[f"simulate-{arm}"]["live"] for arm in ("bce", "kd", "reloop"))
    text = invoke("status", "-w", str(ingested.root)).output
    assert "simulate-reloop" in text
    arm = json.loads(
        invoke("status", "--chain", "simulate-kd", "-w", str(ingested.root), "--json").stdout
    )
    assert arm["live"] == chains["simulate-kd"]["live"] and arm["versions"]
    page = (ingested.root / "reports" / "report.html").read_text(encoding="utf-8")
    assert "Versions and gate decisions (chain simulate-reloop)" in page


def test_unknown_arm_is_refused(ingested):
    result = invoke("simulate", "--arms", "bce,foo", "-w", str(ingested.root))
    assert result.exit_code == EXIT_BAD_INPUT and "arms: foo not among" in result.output


def test_second_process_is_refused_while_the_workspace_is_locked(ingested):
    with ingested.lock():
        result = invoke("train", "--day", "2024-01-02", "-w", str(ingested.root))
    assert result.exit_code == EXIT_LOCKED
    assert "locked" in result.output


def test_unknown_day_is_named(ingested):
    result = invoke("score", "-v", "1", "--day", "2031-01-01", "-w", str(ingested.root))
    assert result.exit_code == EXIT_BAD_INPUT


def test_version_flag():
    result = invoke("--version")
    assert result.exit_code == 0 and "reloop" in result.output


def test_spec_check_prints_the_resolved_settings(monkeypatch):
    monkeypatch.setenv("RELOOP_TRAIN_ALPHA", "0.25")
    result = invoke("spec", "check", SAMPLE_SPEC, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["train"]["alpha"] == 0.25


@pytest.mark.slow
def test_parallel_scoring_writes_the_same_scores_as_serial(ingested, tmp_path):
    import polars as pl

    ws = str(ingested.root)
    assert invoke("train", "--day", "2024-01-02", "-w", ws).exit_code == 0
    serial = invoke("score", "-v", "1", "--all-days", "-w", ws, "--jobs", "1", "--json")
    files = sorted(ingested.root.glob("scores/v0001/day=*/*.parquet"))
    first = {p: pl.read_parquet(p) for p in files}
    parallel = invoke(
        "score", "-v", "1", "--all-days", "-w", ws, "--jobs", "2", "--force", "--json"
    )
    assert serial.exit_code == 0 and parallel.exit_code == 0, parallel.output
    assert len(first) == 4
    for path, frame in first.items():
        assert pl.read_parquet(path).equals(frame)


def test_asking_for_a_gpu_where_there_is_none_is_a_clear_error(ingested):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = workspace_files(ingested)
    result = invoke("train", "--day", "2024-01-02", "-w", str(ingested.root), "--device", "cuda")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "torch sees no GPU" in result.output
    assert workspace_files(ingested) == before


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_model_scores_like_reloop_score(ingested, tmp_path, fmt):
    from reloop_cli.features import vocabulary
    from reloop_cli.features.encoding import encode, to_tensors
    from reloop_cli.versions.checkpoint import load_version

    if fmt == "onnx":
        pytest.importorskip("onnx")
    ws = str(ingested.root)
    assert invoke("train", "--day", "2024-01-02", "-w", ws).exit_code == 0
    assert invoke("score", "-v", "1", "--day", "2024-01-03", "-w", ws).exit_code == 0
    target = tmp_path / f"model.{fmt}"
    result = invoke("export", "-v", "1", "--format", fmt, "--out", str(target), "-w", ws)
    assert result.exit_code == 0, result.output
    feature_map = json.loads((tmp_path / f"model.{fmt}.features.json").read_text())
    assert feature_map["categorical_fields"][0] == "user_id"

    loaded = load_version(ingested, 1)
    rows = ingested.scan_logs(["2024-01-03"])
    view = vocabulary.for_version(ingested, loaded.meta)
    encoded = encode(rows, loaded.spec, view, loaded.meta["field_sizes"]).collect()
    table = to_tensors(encoded, loaded.spec)
    pctr = run_exported(target, fmt, table.categorical, table.dense)
    served = ingested.scan_scores(1, "2024-01-03").collect()
    assert encoded["impression_id"].to_list() == served["impression_id"].to_list()
    assert len(pctr) == 3_000
    assert abs(pctr - served["pctr"].to_numpy()).max() < 1e-5


def test_unknown_export_format_is_refused(ingested, tmp_path):
    result = invoke(
        "export",
        "-v",
        "1",
        "--format",
        "pmml",
        "--out",
        str(tmp_path / "m"),
        "-w",
        str(ingested.root),
    )
    assert result.exit_code == EXIT_BAD_INPUT and "format: 'pmml' is not one of" in result.output
