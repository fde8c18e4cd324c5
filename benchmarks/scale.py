"""`python -m benchmarks.scale`: the loop at scale, day by day, with its time, memory and table.

`reloop synth` writes `days + 1` days of `rows` rows, `reloop ingest` partitions them, then
`reloop simulate --arms reloop` runs the whole loop in a child process. Each day's seconds and the
child's peak resident memory so far come from simulate's JSON (serve + evaluate + train; memory
from the kernel's accounting), and the embedding table's rows from each version's meta.json.

With churn (`--new-items`, `--new-users`, `--lifetime`) the world brings that many new ids a day
and retires them after a lifetime, as real logs do; `--evict-after N` runs the loop twice on the
same logs, once evicting values not seen for N days (`vocabulary.evict_after_days`) and once
keeping every value, and prints both side by side: with eviction the table, the memory and the
time per day must level off after the horizon, at no cost in next-day AUC. With `--against
FILE` the keeping loop is not run again: the evicting run is paired by day with the AUC of the
keeping run saved in FILE (an earlier `--json`), which on the same logs repeats bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reloop_cli.evaluation import statistics

SPEC = Path(__file__).with_name("scale.toml")


def reloop(*args: str, env: dict | None = None) -> tuple[str, float, float]:
    """Run one `reloop` command in a child; return its stdout, seconds and peak RSS in MiB.

    `os.wait4` gives the kernel's resource usage of that one child, so each command's peak is
    its own (getrusage(RUSAGE_CHILDREN) would report the largest of all children so far)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "reloop_cli", "--quiet", *args],
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"reloop {args[0]} failed: {err.read().strip()}")
        out.seek(0)
        return out.read(), seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def make_logs(args: argparse.Namespace, logs: Path) -> None:
    churn = []
    if args.new_items or args.new_users:
        churn = [
            *("--users", str(args.users), "--items", str(args.items)),
            *("--new-items-per-day", str(args.new_items)),
            *("--new-users-per-day", str(args.new_users)),
            *("--item-lifetime-days", str(args.lifetime)),
            *("--user-lifetime-days", str(2 * args.lifetime)),
        ]
    _, seconds, _ = reloop(
        *("synth", "--out", str(logs), "--days", str(args.days + 1)),
        *("--rows-per-day", str(args.rows), *churn),
    )
    print(f"synth {args.days + 1} days x {args.rows:,} rows: {seconds:.0f}s")


def loop(workdir: Path, logs: Path, days: int, env: dict, label: str) -> dict:
    """Ingest and simulate in a fresh workspace; per-day figures of the reloop arm."""
    ws = workdir / f"ws-{label}"
    files = sorted(str(p) for p in logs.glob("*.parquet"))
    _, ingest_s, ingest_mib = reloop("ingest", "--spec", str(SPEC), "-w", str(ws), *files)
    out, sim_s, sim_mib = reloop(
        *("simulate", "--days", str(days), "--arms", "reloop", "-w", str(ws), "--json"), env=env
    )
    result = json.loads(out)
    per_day = result["arms"]["reloop"]["days"]
    table_rows = []
    for day in per_day:
        meta = json.loads((ws / "models" / f"v{day['version']:04d}" / "meta.json").read_text())
        table_rows.append(sum(meta["field_sizes"]))
    return {
        "label": label,
        "seconds_per_day": [d["seconds"] for d in per_day],
        "peak_rss_mib_per_day": [d["peak_rss_mib"] for d in per_day],
        "table_rows_per_day": table_rows,
        "auc_per_day": [d["auc"] for d in per_day],
        "mean_auc": result["arms"]["reloop"]["mean_auc"],
        "simulate_seconds": sim_s,
        "simulate_peak_rss_mib": sim_mib,
        "ingest_seconds": ingest_s,
        "ingest_peak_rss_mib": ingest_mib,
    }


def _ratio(values: list[float], early: int, late: int) -> float:
    return values[late] / values[early]


def report(run: dict, early: int, late: int) -> None:
    seconds = run["seconds_per_day"]
    print(
        f"[{run['label']}] simulate {run['simulate_seconds']:.0f}s, peak RSS "
        f"{run['simulate_peak_rss_mib']:,.0f} MiB; ingest {run['ingest_seconds']:.0f}s, peak RSS "
        f"{run['ingest_peak_rss_mib']:,.0f} MiB; mean next-day AUC {run['mean_auc']:.4f}"
    )
    print(
        f"[{run['label']}] day {late + 1} over day {early + 1}: seconds "
        f"{seconds[late]:.1f}/{seconds[early]:.1f} = {_ratio(seconds, early, late):.2f}, "
        f"table rows "
        f"{run['table_rows_per_day'][late]:,}/{run['table_rows_per_day'][early]:,} = "
        f"{_ratio(run['table_rows_per_day'], early, late):.2f}, peak RSS so far "
        f"{run['peak_rss_mib_per_day'][late]:,.0f}/{run['peak_rss_mib_per_day'][early]:,.0f} MiB = "
        f"{_ratio(run['peak_rss_mib_per_day'], early, late):.2f}"
    )


def run(args: argparse.Namespace, workdir: Path) -> dict:
    logs = workdir / "logs"
    if not any(logs.glob("*.parquet")):
        make_logs(args, logs)
    # The last day is only evaluated (no newer day to judge a new version on): compare the
    # early day with the last day that also trained.
    late = args.days - 2
    early = min(args.early - 1, late)
    runs = []
    if args.evict_after:
        env = {"RELOOP_VOCABULARY_EVICT_AFTER_DAYS": str(args.evict_after)}
        runs.append(loop(workdir, logs, args.days, env, f"evict after {args.evict_after} days"))
    if args.against is None:
        runs.append(loop(workdir, logs, args.days, {}, "keep every value"))
    for entry in runs:
        report(entry, early, late)
    figures: dict = {"days": args.days, "rows_per_day": args.rows, "runs": runs}
    if args.evict_after:
        evicting = runs[0]
        keeping_auc = runs[1]["auc_per_day"] if args.against is None else _saved(args.against)
        figures["auc_difference"] = compare_by_day(evicting["auc_per_day"], keeping_auc)
    main_run = runs[0]
    figures.update(
        seconds_per_day=main_run["seconds_per_day"],
        simulate_peak_rss_mib=main_run["simulate_peak_rss_mib"],
        mean_auc=main_run["mean_auc"],
    )
    return figures


def _saved(path: Path) -> list[float]:
    """Next-day AUC per day of an earlier keep-every-value run: its `--json` file, or the
    documented figures of docs/results/scale_60d_churn_evict14_cpu.json (`keep_every_value`)."""
    saved = json.loads(path.read_text())
    if "keep_every_value" in saved:
        return [day["next_day_auc"] for day in saved["keep_every_value"]]
    keeping = [run for run in saved["runs"] if run["label"] == "keep every value"]
    if not keeping:
        raise SystemExit(f"{path}: no keep-every-value run in it")
    return keeping[0]["auc_per_day"]


def compare_by_day(evicting: list[float], keeping: list[float]) -> dict:
    """Next-day AUC with eviction minus without, paired by day (the days both runs have), with
    Student's t interval over the days: all of them, and the later half (eviction's cost, if
    any, builds up as more values have been away longer than the horizon)."""
    days = min(len(evicting), len(keeping))
    differences = [e - k for e, k in zip(evicting[:days], keeping[:days], strict=True)]
    overall = statistics.across_repeats(differences)
    print(
        f"next-day AUC with eviction minus without, paired over days 1-{days}: "
        f"{overall.value:+.4f} [{overall.low:+.4f}, {overall.high:+.4f}], p = {overall.p_value:.2f}"
    )
    second_half = statistics.across_repeats(differences[days // 2 :])
    print(
        f"  days {days // 2 + 1}-{days}: {second_half.value:+.4f} "
        f"[{second_half.low:+.4f}, {second_half.high:+.4f}]"
    )
    return {
        "days": days,
        "per_day": differences,
        "all_days": overall.to_dict(),
        "second_half": second_half.to_dict(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--days", type=int, default=31, help="days evaluated (one more is made)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per day")
    parser.add_argument("--early", type=int, default=2, help="the day the last is compared with")
    parser.add_argument("--users", type=int, default=2_000_000, help="users on day 0 (churn)")
    parser.add_argument("--items", type=int, default=1_000_000, help="items on day 0 (churn)")
    parser.add_argument("--new-items", type=int, default=0, help="new items a day")
    parser.add_argument("--new-users", type=int, default=0, help="new users a day")
    parser.add_argument("--lifetime", type=int, default=14, help="days before an item retires")
    parser.add_argument(
        "--evict-after", type=int, default=0, help="also run with this eviction, side by side"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="with --evict-after: compare with this earlier run's keep-every-value AUC per day "
        "(its --json file) instead of running that loop again",
    )
    parser.add_argument("--workdir", type=Path, help="keep the logs and workspaces here")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.workdir:
        figures = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
