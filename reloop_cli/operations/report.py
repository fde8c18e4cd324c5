"""`reloop report`: one self-contained HTML page a CTR team reads each morning.

Plots are rendered with matplotlib (Agg, no display) to PNG and embedded as data URIs, so the
page is one file that opens anywhere. Sources: the last `reloop simulate` result saved in the
workspace (per-day next-day AUC/Logloss per arm with 95% bands, the oracle, each arm's paired
lift over bce per day and pooled with error bars, one verdict line per arm, and with repeats what
holds across them), the scores and labels on disk (calibration), and the registry (the main
chain's versions and gate decisions).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from reloop_cli.columns import LABEL, MAIN_CHAIN, PCTR
from reloop_cli.evaluation.evaluate import labelled_scores
from reloop_cli.evaluation.metrics import calibration_buckets
from reloop_cli.evaluation.statistics import format_interval
from reloop_cli.operations.experiment import experiments_status
from reloop_cli.operations.experiment_report import experiments_section
from reloop_cli.operations.html_parts import fmt, png, table
from reloop_cli.operations.replay_report import REPLAY_FILE, replay_section
from reloop_cli.store.quarantine import quarantined
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace

SIMULATION_FILE = "simulate.json"
CLOSED_LOOP_FILE = "closed_loop.json"
OVER_HTTP_FILE = "over_http.json"


def save_simulation(ws: Workspace, payload: dict) -> Path:
    """Keep the last simulation's result where `reloop report` finds it."""
    path = ws.reports / SIMULATION_FILE
    ws.write_json(payload, path)
    return path


def save_closed_loop(ws: Workspace, payload: dict) -> Path:
    """Keep the last closed-loop simulation's result where `reloop report` finds it."""
    path = ws.reports / CLOSED_LOOP_FILE
    ws.write_json(payload, path)
    return path


def save_over_http(ws: Workspace, payload: dict, kind: str = "") -> Path:
    """Keep the last loop over HTTP (`simulate --closed-loop --over-http`, or with
    `--online-policy`: kind "policy") beside the others."""
    path = ws.reports / (f"{kind}_{OVER_HTTP_FILE}" if kind else OVER_HTTP_FILE)
    ws.write_json(payload, path)
    return path


def _metric_plot(sim: dict, metric: str, label: str) -> str:
    """Each arm's daily metric with its 95% interval as a band (and the oracle)."""
    figure, axis = plt.subplots(figsize=(7, 3.2))
    for arm, entry in sim["arms"].items():
        days = [d["day"][5:] for d in entry["days"]]
        (line,) = axis.plot(days, [d[metric] for d in entry["days"]], marker="o", label=arm)
        if all(f"{metric}_low" in d for d in entry["days"]):
            axis.fill_between(
                days,
                [d[f"{metric}_low"] for d in entry["days"]],
                [d[f"{metric}_high"] for d in entry["days"]],
                color=line.get_color(),
                alpha=0.12,
            )
    if sim.get("oracle"):
        axis.plot(
            [o["day"][5:] for o in sim["oracle"]],
            [o[metric] for o in sim["oracle"]],
            linestyle="--",
            color="grey",
            label="oracle",
        )
    axis.set(title=f"next-day {label} per day (bands: 95% intervals)", xlabel="day", ylabel=label)
    axis.legend()
    axis.grid(alpha=0.3)
    return png(figure)


def _lift_plot(sim: dict) -> str | None:
    """Each arm minus bce, paired on the same rows: per day and pooled, with 95% error bars."""
    comparisons = sim.get("comparisons") or {}
    if not comparisons:
        return None
    baseline = sim.get("baseline", "bce")
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    width = 0.8 / len(comparisons)
    for k, (arm, comparison) in enumerate(comparisons.items()):
        entries = [*comparison["days"], {"day": "pooled", **comparison["pooled"]}]
        xs = [i + k * width for i in range(len(entries))]
        for axis, key in zip(axes, ("auc", "logloss"), strict=True):
            values = [e[key]["value"] for e in entries]
            errors = [
                [v - e[key]["low"] for v, e in zip(values, entries, strict=True)],
                [e[key]["high"] - v for v, e in zip(values, entries, strict=True)],
            ]
            axis.bar(xs, values, width, yerr=errors, capsize=3, label=arm)
    labels = [d["day"][5:] for d in next(iter(comparisons.values()))["days"]] + ["pooled"]
    titles = (f"AUC minus {baseline} (95% CI)", f"Logloss minus {baseline} (95% CI)")
    for axis, name in zip(axes, titles, strict=True):
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(labels)), labels, rotation=30)
        axis.set(title=name)
        axis.legend()
    return png(figure)


def _verdicts(sim: dict) -> str:
    baseline = sim.get("baseline", "bce")
    lines = []
    for arm, comparison in (sim.get("comparisons") or {}).items():
        auc, logloss = comparison["pooled"]["auc"], comparison["pooled"]["logloss"]
        lines.append(
            f"<li><b>{html.escape(arm)} vs {html.escape(baseline)}</b>: AUC "
            f"{format_interval(auc, signed=True)}, "
            f"{html.escape(comparison['verdict']['auc'])}; Logloss "
            f"{format_interval(logloss, signed=True)}, "
            f"{html.escape(comparison['verdict']['logloss'])}</li>"
        )
    if not lines:
        return ""
    return (
        "<p>Paired on the same rows, pooled over the days (these versions on these rows; "
        "whether a loss helps needs repeats, <code>--seeds</code>):</p><ul>"
        + "".join(lines)
        + "</ul>"
    )


def _repeats_section(sim: dict) -> str:
    """What holds across repeats: a table and each repeat's pooled AUC lift with its interval."""
    rows = []
    for arm, entry in sim["summary"].items():
        auc = entry["mean_auc"]
        lift = entry.get("lift_auc")
        tally = entry.get("repeats_auc")
        rows.append(
            [
                arm,
                fmt(auc["value"])
                + (f" [{fmt(auc['low'])}, {fmt(auc['high'])}]" if auc["low"] is not None else ""),
                fmt(entry["mean_logloss"]["value"]),
                (format_interval(lift, signed=True) if lift and lift["low"] is not None else "-"),
                f"{lift['p_value']:.2g}" if lift and lift["p_value"] is not None else "-",
                f"{tally['better']} / {tally['worse']} / {tally['no_difference']}"
                if tally
                else "-",
                entry.get("verdict_auc", ""),
            ]
        )
    summary_table = table(
        [
            "arm",
            "mean AUC [95% CI]",
            "mean Logloss",
            f"AUC lift vs {sim['baseline']} [95% CI, t]",
            "p",
            "repeats better / worse / n.s.",
            "verdict",
        ],
        rows,
    )
    figure, axis = plt.subplots(figsize=(7, 3.2))
    arms = [a for a in sim["summary"] if a != sim["baseline"]]
    for k, arm in enumerate(arms):
        pooled = [r["comparisons"][arm]["pooled"]["auc"] for r in sim["repeats"]]
        xs = [i + k * 0.8 / max(len(arms), 1) for i in range(len(pooled))]
        axis.errorbar(
            xs,
            [p["value"] for p in pooled],
            yerr=[
                [p["value"] - p["low"] for p in pooled],
                [p["high"] - p["value"] for p in pooled],
            ],
            fmt="o",
            capsize=3,
            label=arm,
        )
    names = [
        (f"w{r['world']} " if r.get("world") is not None else "") + f"s{r['seed']}"
        for r in sim["repeats"]
    ]
    axis.set_xticks(range(len(names)), names)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set(title=f"pooled AUC lift over {sim['baseline']} per repeat (95% CI)")
    axis.legend()
    heading = f"<h2>Across {len(sim['repeats'])} repeats</h2>"
    return heading + summary_table + f'<img alt="plot" src="{png(figure)}">'


def _calibration_plot(ws: Workspace, sim: dict) -> str | None:
    """Predicted vs observed CTR by bucket, for each arm's version on the last simulated day."""
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    drawn = False
    for arm, entry in sim["arms"].items():
        last = entry["days"][-1]
        if not ws.has_scores(last["version"], last["day"]):
            continue
        joined = labelled_scores(ws, last["version"], last["day"])
        buckets = calibration_buckets(joined[LABEL].to_numpy(), joined[PCTR].to_numpy())
        axis.plot(
            [b["mean_pctr"] for b in buckets],
            [b["ctr"] for b in buckets],
            marker="o",
            label=f"{arm} v{last['version']}",
        )
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    top = axis.get_xlim()[1]
    axis.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect")
    axis.set(title="calibration, last day", xlabel="mean predicted CTR", ylabel="observed CTR")
    axis.legend()
    return png(figure)


def _online_plot(world: dict, key: str, label: str) -> str:
    """One world's per-day figure for every policy (CTR with its 95% band)."""
    figure, axis = plt.subplots(figsize=(7, 3.2))
    for policy, days in world["online"].items():
        names = [d["day"][5:] for d in days]
        dashed = policy in ("oracle", "random")
        values = [d[key]["value"] if isinstance(d[key], dict) else d[key] for d in days]
        (line,) = axis.plot(
            names, values, marker="o", label=policy, linestyle="--" if dashed else "-"
        )
        if isinstance(days[0][key], dict):
            axis.fill_between(
                names,
                [d[key]["low"] for d in days],
                [d[key]["high"] for d in days],
                color=line.get_color(),
                alpha=0.12,
            )
    axis.set(title=f"world {world['config']['world']}: {label} per day", xlabel="day", ylabel=label)
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return png(figure)


def _closed_loop_section(payload: dict) -> str:
    """The closed loop: online CTR and exposure per day per policy, verdicts, across worlds."""
    parts = ["<h2>Closed loop: each arm's model decides what its users see</h2>"]
    for world in payload["worlds"]:
        for key, label in (("ctr", "online CTR (95% band)"), ("gini", "exposure Gini")):
            parts.append(f'<img alt="plot" src="{_online_plot(world, key, label)}">')
        items = []
        for arm, pooled in world["pooled"].items():
            ctr = pooled["ctr"]
            items.append(
                f"<li><b>{html.escape(arm)} vs {html.escape(world['baseline'])}</b>: online CTR "
                f"{format_interval(ctr, signed=True)}, "
                f"{html.escape(pooled['verdict'])}</li>"
            )
        means = world["means"]
        rows = [
            [
                policy,
                fmt(entry["ctr"]),
                fmt(entry["expected_ctr"]),
                fmt(entry.get("regret")),
                fmt(entry["gini"]),
                fmt(entry.get("ope_error")),
            ]
            for policy, entry in means.items()
        ]
        parts.append(
            table(["policy", "online CTR", "expected CTR", "regret", "Gini", "OPE error"], rows)
        )
        parts.append("<ul>" + "".join(items) + "</ul>")
    summary = payload["summary"]
    if len(summary["worlds"]) > 1:
        rows = [
            [
                arm,
                format_interval(e["ctr"], signed=True),
                e["verdict"],
            ]
            for arm, e in summary["lifts"].items()
        ]
        parts.append(f"<h3>Across worlds {summary['worlds']}</h3>")
        parts.append(table(["arm", "online CTR lift [95% CI, t]", "verdict"], rows))
    return "".join(parts)


def _history(registry: Registry, chain: str = MAIN_CHAIN) -> str:
    rows = []
    for v in registry.versions(chain):
        decision = v["decision"] or {}
        holdout = decision.get("candidate") or {}
        verdict = "; ".join(decision.get("reasons", [])) or decision.get("reason", "")
        if decision.get("forced"):
            verdict = "forced past the gate"
        rows.append(
            [
                f"v{v['version']}",
                v["day"],
                f"v{v['parent']}" if v["parent"] else "-",
                v["loss"],
                v["status"],
                fmt(holdout.get("auc")),
                fmt(holdout.get("logloss")),
                verdict,
            ]
        )
    if not rows:
        return f"<p>No versions in chain {html.escape(chain)} yet.</p>"
    return table(
        ["version", "day", "parent", "loss", "status", "holdout AUC", "holdout Logloss", "gate"],
        rows,
    )


def _history_missing() -> str:
    return "<p>No versions yet (`reloop run`, `reloop train` or `reloop simulate`).</p>"


def _quarantine_section(ws: Workspace) -> str:
    """Files a nightly run set aside, with why; nothing when there are none."""
    records = quarantined(ws)
    if not records:
        return ""
    rows = [[html.escape(r.source), html.escape(r.reason), html.escape(r.when)] for r in records]
    return "<h2>Quarantined files</h2>" + table(["file", "why", "when"], rows)


def build_report(ws: Workspace) -> str:
    """The report page as HTML text."""
    sections = [f"<h1>reloop report</h1><p>workspace: {html.escape(str(ws.root))}</p>"]
    sim_path = ws.reports / SIMULATION_FILE
    if sim_path.exists():
        sim = json.loads(sim_path.read_text(encoding="utf-8"))
        if "repeats" in sim:
            sections.append(_repeats_section(sim))
            sim = sim["repeats"][0]
            sections.append("<h2>The first repeat, day by day</h2>")
        else:
            sections.append("<h2>Simulation: next-day metrics per arm</h2>")
        images = [
            _metric_plot(sim, "auc", "AUC"),
            _metric_plot(sim, "logloss", "Logloss"),
            _lift_plot(sim),
            # a simulated world's versions live in its own workspace, not this one
            _calibration_plot(ws, sim) if sim.get("world") is None else None,
        ]
        sections += [f'<img alt="plot" src="{src}">' for src in images if src]
        means = [
            [arm, fmt(e["mean_auc"]), fmt(e["mean_logloss"])] for arm, e in sim["arms"].items()
        ]
        sections.append(table(["arm", "mean AUC", "mean Logloss"], means))
        sections.append(_verdicts(sim))
    else:
        sections.append("<p>No simulation in this workspace yet (`reloop simulate`).</p>")
    closed = ws.reports / CLOSED_LOOP_FILE
    if closed.exists():
        sections.append(_closed_loop_section(json.loads(closed.read_text(encoding="utf-8"))))
    replayed = ws.reports / REPLAY_FILE
    if replayed.exists():
        sections.append(replay_section(json.loads(replayed.read_text(encoding="utf-8"))))
    if ws.registry_path.exists():
        with Registry(ws) as registry:
            chains = [c["chain"] for c in registry.chains()] or [MAIN_CHAIN]
            for chain in chains:  # the main chain first, then simulate's arms
                sections.append(
                    f"<h2>Versions and gate decisions (chain {html.escape(chain)})</h2>"
                )
                sections.append(_history(registry, chain))
            sections.append(experiments_section(experiments_status(registry)))
    else:
        sections.append("<h2>Versions and gate decisions</h2>")
        sections.append(_history_missing())
    sections.append(_quarantine_section(ws))
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{display:block;margin:1em 0;max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>reloop report</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_report(ws: Workspace, out: Path | None = None) -> Path:
    """Render the report to `out` (default: reports/report.html in the workspace), atomically."""
    target = out or ws.reports / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}.part")
    tmp.write_text(build_report(ws), encoding="utf-8")
    tmp.replace(target)
    return target
