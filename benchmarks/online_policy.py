"""`python -m benchmarks.online_policy [--worlds 3] [--days 12] [--units user_id,request]
[--out FILE]`: how often the online promotion policy promotes a truly better, a truly worse and a
harmful candidate, against the offline gate alone (docs/RESULTS.md section 7).

For each randomisation unit and world seed: the served loop of `reloop simulate --closed-loop
--over-http --online-policy` (`experiments/online_policy.py`: a `reloop serve` process, nightly
`reloop run --from-server`) with `pipelines/sample.toml`, arm `reloop`, epsilon 0.05, and
[experiment] shares 0.1 then 0.5, one night a stage, at most `--max-nights` nights, margin 0.02.
Every candidate's true lift is what the world's true click probabilities give its policy and the
live version's on all of the days it waited for a verdict. Printed as the markdown table of
docs/RESULTS.md and written as JSON.

Every second candidate is trained under a planted configuration fault (`online_policy.FAULTS`:
a logistic regression for the backbone, a learning rate 25 times the spec's, embeddings of 2
dimensions, a one-day window; the stored spec edited for that night), so that some candidates
are truly worse; `--no-faults` leaves every night's spec as it is (then every candidate measured
so far was truly better than the live version it faced).

`--units request` randomises each request (the unit when a request names no user): valid here,
where a user's clicks depend only on what is shown, and far more sensitive, because the synth
worlds' user activity is Zipf-distributed (one user brings about a tenth of a day's requests),
which is what makes user-level intervals wide.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from reloop_cli.evaluation.policies import Policy
from reloop_cli.experiments.closed_loop import ClosedLoopConfig
from reloop_cli.experiments.online_policy import promotion_cell, run_online_policy, summarize
from reloop_cli.experiments.over_http import OverHttpConfig
from reloop_cli.spec.pipeline import load_spec
from reloop_cli.store.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def run(args: argparse.Namespace) -> dict:
    base = load_spec(REPO / "pipelines" / "sample.toml")
    out: dict = {"settings": vars(args) | {"out": str(args.out)}, "units": {}}
    for unit in args.units.split(","):
        spec = base.override(
            "experiment",
            shares=(0.1, 0.5),
            stage_nights=1,
            max_nights=args.max_nights,
            margin=0.02,
        )
        results = []
        for world in range(args.worlds):
            closed = ClosedLoopConfig(
                days=args.days,
                requests=args.requests,
                candidates=20,
                policy=Policy("epsilon", 0.05, slots=5),
                world=world,
                users=args.users,
            )
            started = time.time()
            with tempfile.TemporaryDirectory() as folder:
                result = run_online_policy(
                    Workspace(Path(folder)),
                    spec,
                    OverHttpConfig(closed, "reloop"),
                    unit="" if unit == "request" else unit,
                    plant_faults=not args.no_faults,
                )
            results.append(result)
            print(f"{unit}, world {world}: {time.time() - started:.0f} s", flush=True)
        out["units"][unit] = {
            "worlds": [r.to_dict() for r in results],
            "summary": summarize(results),
        }
    return out


def table(payload: dict) -> str:
    lines = [
        "| unit | policy | promoted: truly better | truly worse | harmful (< -margin) |",
        "|---|---|---|---|---|",
    ]
    for unit, found in payload["units"].items():
        for policy, rows in found["summary"]["promotions"].items():
            cells = [promotion_cell(rows[label]) for label in ("better", "worse", "harmful")]
            lines.append(f"| {unit} | {policy.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=3)
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--max-nights", type=int, default=5)
    parser.add_argument("--units", default="user_id,request")
    parser.add_argument("--no-faults", action="store_true", help="no planted configuration faults")
    parser.add_argument("--out", type=Path, default=REPO / "docs/results/online_policy_cpu.json")
    args = parser.parse_args()
    payload = run(args)
    args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(table(payload))
    for unit, found in payload["units"].items():
        summary = found["summary"]
        print(
            f"{unit}: {summary['candidates']} candidates judged, true lift "
            f"{summary['true_lift']}, online outcomes {summary['online_outcomes']}, "
            f"{summary['running_at_end']} still running at the end"
        )


if __name__ == "__main__":
    main()
