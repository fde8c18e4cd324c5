"""`reloop simulate --closed-loop`: running the closed loop in simulated worlds and rendering
what each arm's users clicked (the command itself is `simulate`, in `cli/loop.py`)."""

from __future__ import annotations

from rich.table import Table

from reloop_cli.cli.common import _clean, _train_overrides, emit_json, fmt, out, run_stage
from reloop_cli.cli.loop import _interval
from reloop_cli.runtime.progress import note


def simulate_closed_loop(
    ws, spec_path, files, days, arms, seeds, world_seeds, settings, as_json, alpha, model
) -> None:
    """`simulate --closed-loop`: the loop served by each arm's own model, in simulated worlds."""
    from reloop_cli.errors import BadInput
    from reloop_cli.experiments.closed_loop import ClosedLoopConfig, run_closed_loop
    from reloop_cli.experiments.online import across_worlds
    from reloop_cli.experiments.simulate import parse_arms
    from reloop_cli.operations.report import save_closed_loop, write_report
    from reloop_cli.runtime.resources import bundled
    from reloop_cli.spec.pipeline import load_spec

    def action():
        if files or seeds != 1:
            raise BadInput(
                "--closed-loop makes its own worlds: no FILES, no --seeds (use --world-seeds)"
            )
        chosen = parse_arms(arms)
        spec = load_spec(spec_path or bundled("pipelines/sample.toml"))
        spec = _train_overrides(spec, None, alpha, model, None, None, None)
        results = []
        with ws.lock():
            for world in range(world_seeds or 1):
                config = ClosedLoopConfig(days=days, world=world, **settings)
                results.append(run_closed_loop(ws, spec, chosen, config, on_step=note))
            payload = {"worlds": [r.to_dict() for r in results], "summary": across_worlds(results)}
            save_closed_loop(ws, _clean(payload))
            return results, payload, write_report(ws)

    results, payload, report = run_stage(action)
    if as_json:
        emit_json(payload)
        return
    for result in results:
        render_closed_loop(result)
    if len(results) > 1:
        render_worlds(payload["summary"], results[0].baseline)
    out.print(f"report: {report}")


def render_closed_loop(result) -> None:
    """Per day: online CTR of each arm, the oracle and random; then each arm against bce."""
    from reloop_cli.evaluation import statistics

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
            f"{arm} vs {result.baseline}: online CTR {_interval(pooled, signed=True)} "
            f"({statistics.verdict(pooled)})"
        )


def render_worlds(summary: dict, baseline: str) -> None:
    """What holds across worlds."""
    table = Table(title=f"across worlds {summary['worlds']}: mean [95% CI, t]")
    for column in ("policy", "online CTR", "expected CTR", "exposure Gini"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for policy, entry in summary["policies"].items():
        ctr = entry["ctr"]
        table.add_row(
            policy,
            f"{ctr['value']:.4f} [{ctr['low']:.4f}, {ctr['high']:.4f}]",
            fmt(entry["expected_ctr"]["value"]),
            fmt(entry["gini"]["value"], 3),
        )
    out.print(table)
    for arm, entry in summary["lifts"].items():
        lift, worlds = entry["ctr"], entry["worlds"]
        out.print(
            f"{arm} vs {baseline}: online CTR {lift['value']:+.4f} [{lift['low']:+.4f}, "
            f"{lift['high']:+.4f}], {entry['verdict']}; worlds better / worse / n.s.: "
            f"{worlds['better']} / {worlds['worse']} / {worlds['no_difference']}"
        )
    trained = summary["ope"]["trained_logging"]
    if trained["arm_days"]:
        error = trained["mean_error"]
        out.print(
            f"off-policy (SNIPS) CTR error over {trained['arm_days']} arm-days: mean "
            f"{error['value']:+.4f} [{error['low']:+.4f}, {error['high']:+.4f}], mean absolute "
            f"{trained['mean_absolute_error']:.4f}"
        )
