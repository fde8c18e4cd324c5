"""The benchmark code runs (tiny sizes); its figures are never asserted as targets here."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import main
from tests.helpers import REPO

pytestmark = pytest.mark.slow  # subprocesses and ranks: seconds each


def test_benchmark_smoke_run_reports_every_figure(capsys):
    figures = main(["--quick"])
    assert set(figures) == {
        "train_rows_per_s",
        "fraction_of_matmul_limit",
        "reloop_over_bce",
        "reloop_loss_extra_per_step",
        "ingest_rows_per_s",
        "join_rows_per_s",
        "score_rows_per_s",
        "dense_large_over_small",
        "sparse_large_over_small",
        "auto_large_over_small",
        "auto_over_dense_small",
    }
    extra = figures.pop("reloop_loss_extra_per_step")  # a difference: may be either sign
    assert abs(extra) < 1.0
    assert all(value > 0 for value in figures.values())
    assert "ratio" in capsys.readouterr().out


def test_scale_benchmark_smoke_run_reports_days_and_memory(capsys):
    from benchmarks.scale import main as scale

    figures = scale(["--days", "3", "--rows", "2000"])
    assert len(figures["seconds_per_day"]) == 3
    assert figures["simulate_peak_rss_mib"] > 50  # a Python process with torch: not a zero
    assert 0.5 < figures["mean_auc"] <= 1.0
    assert "peak RSS" in capsys.readouterr().out


def test_scale_benchmark_runs_with_and_without_eviction_and_against_a_saved_run(tmp_path, capsys):
    """Eviction and keeping side by side; then --against pairs a new evicting run with the
    per-day AUC of the earlier keeping run, the way a second horizon is measured without
    repeating the hours-long keeping loop."""
    from benchmarks.scale import main as scale

    world = [
        *("--days", "3", "--rows", "2000", "--users", "400", "--items", "300"),
        *("--new-items", "200", "--new-users", "100", "--lifetime", "2"),
        *("--workdir", str(tmp_path / "first")),
    ]
    first = scale([*world, "--evict-after", "1", "--json", str(tmp_path / "first.json")])
    evicting, keeping = first["runs"]
    assert evicting["table_rows_per_day"][-1] < keeping["table_rows_per_day"][-1]
    assert len(evicting["peak_rss_mib_per_day"]) == 3
    difference = first["auc_difference"]
    assert difference["days"] == 3
    assert difference["per_day"] == [
        e - k for e, k in zip(evicting["auc_per_day"], keeping["auc_per_day"], strict=True)
    ]
    assert "with eviction minus without" in capsys.readouterr().out
    world[-1] = str(tmp_path / "second")
    second = scale([*world, "--evict-after", "1", "--against", str(tmp_path / "first.json")])
    assert [run["label"] for run in second["runs"]] == ["evict after 1 days"]
    # The same logs and seeds: the second evicting run repeats the first one's AUC day by day.
    assert second["auc_difference"]["per_day"] == pytest.approx(
        first["auc_difference"]["per_day"], abs=1e-9
    )


def test_fuxictr_comparison_reloop_side_runs_on_the_same_split(tmp_path, frappe_dir):
    """Only reloop's half (FuxiCTR's needs its own venv): same split files, one epoch."""
    from benchmarks import versus_fuxictr

    counts = versus_fuxictr.write_split_csvs(tmp_path)
    assert sum(counts.values()) == 86_582
    assert versus_fuxictr.reloop_preprocess(tmp_path) > 0
    ours = versus_fuxictr.reloop_train(tmp_path, epochs=1, emb_reg=0.05)
    assert ours["train_rows"] == counts["train"]
    assert len(ours["epoch_train_seconds"]) == 1
    assert ours["test_auc"] > 0.85


def test_oracle_gap_benchmark_separates_drift_from_estimation(capsys):
    from benchmarks.oracle_gap import main as oracle_gap

    figures = oracle_gap(["--seeds", "0", "--days", "3", "--rows", "3000", "--reference"])
    figures = figures["seed_0"]
    # Yesterday's tastes and unseen new items can only rank today's clicks worse than the truth.
    assert 0.5 < figures["stale_oracle_auc"] < figures["oracle_auc"]
    assert 0 < figures["new_item_share"] < 0.2
    assert 0.5 < figures["reference_auc"] < figures["oracle_auc"]  # it learns, short of the truth
    assert "stale oracle" in capsys.readouterr().out


def test_embedding_l2_study_trains_every_form(capsys):
    from benchmarks.embedding_l2 import main as embedding_l2

    files = sorted((REPO / "sample_data").glob("clicks-*.parquet"))[:2]
    summary = embedding_l2(
        [
            *map(str, files),
            "--spec",
            str(REPO / "pipelines" / "sample.toml"),
            "--l2",
            "0.01",
            "--seeds",
            "0",
            "--epochs",
            "1",
        ]
    )
    assert [row["rows"] for row in summary] == ["all", "touched", "batch-aware"]
    assert all(0.5 < row["auc_mean"] < 1 for row in summary)
    assert "touched" in capsys.readouterr().out


def test_gpu_benchmark_fails_fast_without_a_gpu_and_runs_on_the_cpu(tmp_path, capsys):
    import torch

    from benchmarks import gpu

    if not torch.cuda.is_available():
        assert gpu.main(["--out", str(tmp_path / "none.json")]) == 2
        assert "torch sees no GPU" in capsys.readouterr().err
        assert not (tmp_path / "none.json").exists()
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures) >= {"step", "training", "scoring", "ddp_nccl", "environment"}
    assert figures["training"]["train_rows_per_s"] > 0
    assert "needs 2 GPUs" in figures["ddp_nccl"]["skipped"]


def test_ingest_and_epoch_benchmarks_run_side_by_side(capsys):
    import subprocess

    from benchmarks import ingest_speed, vocab_epoch

    known = subprocess.run(
        ["git", "cat-file", "-e", f"{ingest_speed.BEFORE_TIME_HANDLING}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
    )
    if known.returncode != 0:
        pytest.skip("the reference commit is not in this checkout's history (no git clone)")
    speed = ingest_speed.main(["--rows", "20000", "--rounds", "1"])
    assert speed["new_over_old"] > 0 and len(speed["ratios"]) == 1
    epochs = vocab_epoch.main(["--rows", "4000", "--rounds", "1"])
    assert epochs["distinct"]["table_rows"] > epochs["few"]["table_rows"]
    assert set(epochs["ratios"]) == {"26 fields", "6 fields, hashed"}


def test_serving_benchmark_measures_every_stack_and_the_swap(capsys):
    """Tiny counts, MLflow's server left out (its start takes most of a minute): the figures
    exist, no request failed, and the swap was seen from both versions."""
    from benchmarks.serve_load import main as serve_load

    figures = serve_load(["--quick", "--no-peer"])
    assert set(figures["forward_us"][100]) == {"eager", "torchscript_trace", "onnxruntime"}
    for size in (20, 100, 500):
        stacks = figures["throughput"][size]
        assert set(stacks) == {"in_process", "reloop_serve"}
        assert stacks["reloop_serve"]["failures"] == 0 and stacks["reloop_serve"]["per_s"] > 0
    swap = figures["hot_swap"]
    assert swap["failures"] == 0 and swap["stale_after_swap"] == 0
    assert figures["click_join"]["clicked"] == figures["click_join"]["rows"] // 10
    assert "hot swap under load" in capsys.readouterr().out


def test_error_memory_benchmark_counts_its_bytes_and_times_reads_and_writes():
    from benchmarks.adapt_memory import KEY_DIM, per_row

    figures = per_row(70, 12, quick=True)
    assert figures["memory_bytes"] == 70 * 2**12 * 3 * 4 + KEY_DIM * 70 * 12 * 4
    assert figures["added_us_per_row"] > 0 and figures["write_rows_per_s"] > 0


def test_mind_impressions_become_one_labelled_row_per_shown_item(tmp_path, capsys):
    """MIND's format (made up rows here; the data set itself may not be copied): times in a
    12-hour clock, each shown item with its label, categories from news.tsv."""
    import polars as pl

    from benchmarks.mind_clicks import main as mind_clicks

    behaviors = tmp_path / "behaviors.tsv"
    behaviors.write_text(
        "1\tU1\t11/11/2019 12:05:00 AM\tN9 N8\tN1-1 N2-0 N3-0\n"
        "2\tU2\t11/11/2019 1:30:00 PM\t\tN2-1\n"
        "3\tU1\t11/12/2019 9:00:00 AM\tN1\tN3-0 N4-1\n"
    )
    news = tmp_path / "news.tsv"
    news.write_text(
        'N1\tsports\tsoccer\tA "quoted" title\t\t\t[]\t[]\nN2\tnews\tworld\tT\t\t\t[]\t[]\n'
    )
    paths = mind_clicks(
        ["--behaviors", str(behaviors), "--news", str(news), "--out", str(tmp_path / "out")]
    )
    assert [p.name for p in paths] == ["mind-2019-11-11.parquet", "mind-2019-11-12.parquet"]
    first = pl.read_parquet(paths[0])
    assert first["impression_id"].to_list() == ["1-0", "1-1", "1-2", "2-0"]
    assert first["click"].to_list() == [1, 0, 0, 1]
    assert first["hour"].to_list() == [0, 0, 0, 13]  # 12:05 AM is just past midnight
    assert first["category"].to_list() == ["sports", "news", "", "news"]
    assert first["ts"][0] == 1_573_430_700  # 2019-11-11 00:05:00 UTC
    assert pl.read_parquet(paths[1])["click"].to_list() == [0, 1]
    assert "6 rows (3 clicks) from 3 impressions" in capsys.readouterr().out


@pytest.mark.slow
def test_the_adapter_verdict_runs_every_adapter_and_key_tuned_alike(capsys):
    from benchmarks.adapt_verdict import main as verdict

    payload = verdict(["--quick"])
    (level,) = payload["levels"].values()
    summary, (run,) = level["summary"], level["runs"]
    keys = {"reloop2[hidden]", "reloop2[preactivation]", "reloop2[standardized]"}
    assert keys | {"intercept", "field_bias", "incremental", "reloop2+incremental"} == set(summary)
    assert run["figures"]["intercept"]["auc"]["value"] == 0.0  # a shift per slot ranks nothing
    assert all(run["chosen"][name] for name in summary)  # every adapter chose its settings
    assert all("buckets_used_mean" in summary[name]["occupancy"] for name in keys)
    assert "| reloop2[standardized] |" in capsys.readouterr().out


def test_experiment_arms_benchmark_serves_one_arm_a_canary_and_a_shadow(capsys):
    """Tiny counts: each server answered every request, and the figures exist for each."""
    from benchmarks.experiment_arms import main as arms

    figures = arms(["--quick"])
    assert set(figures) == {"one_arm", "canary_50", "shadow"}
    for entry in figures.values():
        assert entry["failures"] == 0 and entry["per_s"] > 0
    assert "x one arm" in capsys.readouterr().out
