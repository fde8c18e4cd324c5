"""`python -m benchmarks.scale`: the loop at scale, day by day, with its time and memory.

`reloop synth` writes `days + 1` days of `rows` rows, `reloop ingest` partitions them, then
`reloop simulate --arms reloop` runs the whole loop in a child process. Each day's seconds come
from simulate's JSON (serve + evaluate + train); the peak resident memory is the child's own,
from the kernel's accounting (`os.wait4`'s `ru_maxrss`). Memory must not grow
with the days because data is streamed by day and by batch; neither must the time per day.
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

SPEC = Path(__file__).with_name("scale.toml")


def reloop(*args: str) -> tuple[str, float, float]:
    """Run one `reloop` command in a child; return its stdout, seconds and peak RSS in MiB.

    `os.wait4` gives the kernel's resource usage of that one child, so each command's peak is
    its own (getrusage(RUSAGE_CHILDREN) would report the largest of all children so far)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "reloop_cli", "--quiet", *args], stdout=out, stderr=err
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"reloop {args[0]} failed: {err.read().strip()}")
        out.seek(0)
        return out.read(), seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def run(days: int, rows: int, workdir: Path) -> dict:
    logs, ws = workdir / "logs", workdir / "ws"
    _, synth_s, _ = reloop(
        "synth", "--out", str(logs), "--days", str(days + 1), "--rows-per-day", str(rows)
    )
    print(f"synth {days + 1} days x {rows:,} rows: {synth_s:.0f}s")
    files = sorted(str(p) for p in logs.glob("*.parquet"))
    _, ingest_s, ingest_mib = reloop("ingest", "--spec", str(SPEC), "-w", str(ws), *files)
    total = (days + 1) * rows
    print(
        f"ingest {total:,} rows: {ingest_s:.0f}s ({total / ingest_s:,.0f} rows/s), "
        f"peak RSS {ingest_mib:,.0f} MiB"
    )
    out, sim_s, sim_mib = reloop(
        "simulate", "--days", str(days), "--arms", "reloop", "-w", str(ws), "--json"
    )
    result = json.loads(out)
    per_day = [d["seconds"] for d in result["arms"]["reloop"]["days"]]
    # The last day is only evaluated (no newer day to judge a new version on): compare the
    # second day with the last day that also trained.
    second, last = per_day[1], per_day[-2]
    print(f"simulate --days {days} (reloop arm): {sim_s:.0f}s, peak RSS {sim_mib:,.0f} MiB")
    print(
        f"seconds per day (serve + eval + train): day 2 {second:.1f}s, day {len(per_day) - 1} "
        f"{last:.1f}s (ratio {last / second:.2f}); min {min(per_day[:-1]):.1f}s, "
        f"max {max(per_day[:-1]):.1f}s"
    )
    return {
        "days": days,
        "rows_per_day": rows,
        "seconds_per_day": per_day,
        "last_over_second_day": last / second,
        "simulate_peak_rss_mib": sim_mib,
        "ingest_peak_rss_mib": ingest_mib,
        "simulate_seconds": sim_s,
        "mean_auc": result["arms"]["reloop"]["mean_auc"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("--days", type=int, default=31, help="days evaluated (one more is made)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per day")
    parser.add_argument("--workdir", type=Path, help="keep the logs and workspace here")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.workdir:
        figures = run(args.days, args.rows, args.workdir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run(args.days, args.rows, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
