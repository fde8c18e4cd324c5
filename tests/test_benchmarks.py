"""The benchmark code runs (tiny sizes); its figures are never asserted as targets here."""

from __future__ import annotations

from benchmarks.run import main


def test_benchmark_smoke_run_reports_every_figure(capsys):
    figures = main(["--quick"])
    assert set(figures) == {
        "train_rows_per_s",
        "fraction_of_matmul_limit",
        "reloop_over_bce",
        "ingest_rows_per_s",
        "join_rows_per_s",
        "score_rows_per_s",
    }
    assert all(value > 0 for value in figures.values())
    assert "ratio" in capsys.readouterr().out
