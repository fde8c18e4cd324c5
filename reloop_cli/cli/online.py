"""`reloop simulate --closed-loop`: rendering what each arm's users clicked, world by world and
across worlds (the command itself is `simulate`, in `cli/loop.py`)."""

from __future__ import annotations

import signal

from rich.table import Table

from reloop_cli.cli.common import fmt, out


def render_closed_loop_worlds(results, payload: dict) -> None:
    """Each world's table, then (with more than one) what holds across them."""
    for result in results:
        render_closed_loop(result)
    if len(results) > 1:
        render_worlds(payload["summary"], results[0].baseline)


def render_closed_loop(result) -> None:
    """Per day: online CTR of each arm, the oracle and random; then each arm against bce."""
    from reloop_cli.evaluation import statistics
    from reloop_cli.evaluation.statistics import format_interval

    title = (
        f"world {result.config.world}, {result.config.mode}: online CTR of the served impressions "
        f"(day 0 served at random)"
    )
    table = Table(title=title)
    policies = [*result.arms, "oracle", "random"]
    table.add_column("day", no_wrap=True)
    for policy in policies:
        table.add_column(
            f"{policy}\nCTR",
            justify="right",
            style="dim" if policy in ("oracle", "random") else None,
        )
    for arm in result.arms:
        table.add_column(f"{arm}\nAUC", justify="right")
    for index, day in enumerate(result.days):
        cells = [day]
        cells += [fmt(result.online[p][index]["ctr"]["value"]) for p in policies]
        cells += [fmt(result.online[a][index].get("auc")) for a in result.arms]
        table.add_row(*cells)
    means = ["mean (days 1+)"]
    means += [fmt(result.mean(p, "ctr")) for p in policies]
    means += [fmt(result.mean(a, "auc")) for a in result.arms]
    table.add_row(*means, style="bold", end_section=True)
    out.print(table)
    for policy in policies:
        regret = result.mean(policy, "regret")
        error = result.mean(policy, "ope_error")
        out.print(
            f"{policy}: expected CTR {fmt(result.mean(policy, 'expected_ctr'))}, exposure Gini "
            f"{fmt(result.mean(policy, 'gini'), 3)}"
            + (f", regret {fmt(regret)} clicks/request" if regret == regret else "")
            + (f", off-policy CTR error {error:+.4f}" if error == error else "")
        )
    for arm in result.lifts:
        pooled = result.pooled(arm)
        out.print(
            f"{arm} vs {result.baseline}: online CTR {format_interval(pooled, signed=True)} "
            f"({statistics.verdict(pooled)})"
        )


def render_worlds(summary: dict, baseline: str) -> None:
    """What holds across worlds."""
    from reloop_cli.evaluation.statistics import format_interval

    table = Table(title=f"across worlds {summary['worlds']}: mean [95% CI, t]")
    for column in ("policy", "online CTR", "expected CTR", "exposure Gini"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for policy, entry in summary["policies"].items():
        ctr = entry["ctr"]
        table.add_row(
            policy,
            format_interval(ctr),
            fmt(entry["expected_ctr"]["value"]),
            fmt(entry["gini"]["value"], 3),
        )
    out.print(table)
    for arm, entry in summary["lifts"].items():
        lift, worlds = entry["ctr"], entry["worlds"]
        out.print(
            f"{arm} vs {baseline}: online CTR {format_interval(lift, signed=True)}, "
            f"{entry['verdict']}; worlds better / worse / n.s.: "
            f"{worlds['better']} / {worlds['worse']} / {worlds['no_difference']}"
        )
    trained = summary["ope"]["trained_logging"]
    if trained["arm_days"]:
        error = trained["mean_error"]
        out.print(
            f"off-policy (SNIPS) CTR error over {trained['arm_days']} arm-days: mean "
            f"{format_interval(error, signed=True)}, mean absolute "
            f"{trained['mean_absolute_error']:.4f}"
        )


def render_over_http(results) -> None:
    """Per day: the online CTR served over HTTP beside the same loop in process, and their
    paired difference; then the difference pooled over the days trained versions served."""
    from reloop_cli.evaluation import statistics
    from reloop_cli.evaluation.statistics import format_interval

    for result in results:
        arm = result.config.arm
        table = Table(
            title=f"world {result.config.closed.world}: {arm} over HTTP vs in process "
            "(online CTR; day 0 served at random)"
        )
        for column in ("day", "served by", "over HTTP", "in process", "difference [95%]"):
            table.add_column(column, justify="left" if column == "day" else "right")
        in_process = result.in_process.online[arm]
        for index, day in enumerate(result.days):
            versions = [v for v in result.online[index]["versions"] if v is not None]
            difference = statistics.Estimate(**result.differences[index])
            table.add_row(
                day,
                ", ".join(f"v{v}" for v in versions) or "random",
                fmt(result.online[index]["ctr"]["value"]),
                fmt(in_process[index]["ctr"]["value"]),
                format_interval(difference, signed=True),
            )
        out.print(table)
        pooled = result.pooled()
        out.print(
            f"over HTTP minus in process, days 1+: {format_interval(pooled, signed=True)} "
            f"({statistics.verdict(pooled)})"
        )
        refused = sum(1 for run in result.runs if run["exit_code"] != 0)
        stopped = (
            "stopped by SIGTERM, logs written"
            if result.server_exit in (0, -signal.SIGTERM)
            else f"exit code {result.server_exit}"
        )
        out.print(
            f"nightly runs: {len(result.runs)} ({refused} refused or inconclusive at the gate); "
            f"server {stopped}"
        )


def render_online_policy(results, summary: dict) -> None:
    """Per world, each candidate: the gate's verdict, its experiment's, and its true lift; then
    how often each policy promoted a truly better, a truly worse and a harmful candidate."""
    for result in results:
        if not result.candidates:
            outcomes = ", ".join(run["outcome"] for run in result.runs)
            out.print(
                f"world {result.world}: no candidate was tested against a live version "
                f"(nightly runs: {outcomes})"
            )
            continue
        table = Table(
            title=f"world {result.world}: candidates, the gate, the experiment and the truth"
        )
        for column in ("candidate", "vs live", "trained on", "gate", "experiment", "true lift"):
            table.add_column(column, justify="left" if column == "trained on" else "right")
        for candidate in result.candidates:
            online = candidate.online or "-"
            if candidate.nights:
                online += f" ({candidate.nights} night(s))"
            lift = f"{candidate.true_lift:+.2%}" if candidate.truth else "-"
            table.add_row(
                f"v{candidate.version}",
                f"v{candidate.live}",
                candidate.day,
                candidate.gate,
                online,
                lift,
            )
        out.print(table)
    table = Table(
        title=f"promotions over {summary['candidates']} judged candidate(s) "
        f"(harmful: true lift below -{summary['margin']:.0%}; 95% Wilson intervals)"
    )
    for column in ("policy", "truly better", "truly worse", "harmful"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    from reloop_cli.experiments.online_policy import promotion_cell

    for policy, rows in summary["promotions"].items():
        cells = [promotion_cell(rows[label]) for label in ("better", "worse", "harmful")]
        table.add_row(policy.replace("_", " "), *cells)
    out.print(table)
    if summary["running_at_end"]:
        out.print(
            f"{summary['running_at_end']} experiment(s) still running at the end: not counted"
        )
