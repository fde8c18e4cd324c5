"""The report's section on the last `reloop replay`: each adapter's lift over the unadapted
version slot by slot (with its paired interval as a band), and the pooled table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from reloop_cli.evaluation.statistics import format_interval
from reloop_cli.operations.html_parts import fmt, png, table

REPLAY_FILE = "replay.json"  # where `reloop replay` keeps its last result, under reports/


def within_slot_cells(name: str, entry: dict) -> list[str]:
    """One adapter's headline row, as the terminal table and the report both show it: AUC,
    gAUC and Logloss minus base within slot ("-" where no slot had an AUC), slots ranked."""
    ranked = entry["slots_ranked"]
    return [
        name,
        format_interval(entry["auc"], signed=True) if entry["auc"] else "-",
        format_interval(entry["gauc"], signed=True) if entry["gauc"] else "-",
        format_interval(entry["logloss"], signed=True),
        f"{ranked} of {ranked + entry['slots_without_auc']}",
    ]


def replay_plot(payload: dict, metric: str, label: str) -> str:
    """Each adapter's per-slot difference from the unadapted version in one metric, with its
    paired 95% interval as a band (a `reloop replay` result)."""
    figure, axis = plt.subplots(figsize=(7, 3.2))
    slots = [s for s in payload["slots"] if s["rows"]]
    hours = [24 * s["slot"] / len(payload["slots"]) for s in slots]
    for name in payload["pooled"]:
        if name == "base":
            continue
        pairs = [s[name].get("vs_base", {}).get(metric) for s in slots]
        values = [p["value"] if p else float("nan") for p in pairs]
        (line,) = axis.plot(hours, values, marker=".", label=name)
        axis.fill_between(
            hours,
            [p["low"] if p else float("nan") for p in pairs],
            [p["high"] if p else float("nan") for p in pairs],
            color=line.get_color(),
            alpha=0.1,
        )
    axis.axhline(0.0, color="black", linewidth=0.8)
    request = payload["request"]
    axis.set(
        title=f"v{request['version']} on {request['day']}: {label} per slot",
        xlabel="hour of the day (slot start)",
        ylabel=label,
    )
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return png(figure)


def replay_section(payload: dict) -> str:
    """The last replay: the within-slot headline, per-slot lifts over base, the pooled table
    (whose AUC includes between-slot calibration) and the memory's occupancy."""
    parts = ["<h2>Replay: each adapter against the unadapted version, slot by slot</h2>"]
    headline = []
    for name, entry in payload.get("within_slot", {}).items():
        headline.append(within_slot_cells(name, entry))
    if headline:
        parts.append("<h3>Within slot: the mean over slots of adapter - base</h3>")
        parts.append(table(["adapter", "AUC", "gAUC", "Logloss", "slots ranked"], headline))
    for metric, label in (("auc", "AUC - base"), ("logloss", "Logloss - base")):
        parts.append(f'<img alt="plot" src="{replay_plot(payload, metric, label)}">')
    rows = []
    for name, entry in payload["pooled"].items():
        versus = entry.get("vs_base")
        rows.append(
            [
                name,
                fmt(entry["auc"]["value"]) if entry["auc"] else "-",
                fmt(entry["logloss"]["value"]),
                fmt(entry["calibration"]),
                format_interval(versus["auc"], signed=True) if versus and versus["auc"] else "-",
                format_interval(versus["logloss"], signed=True) if versus else "-",
            ]
        )
    headers = ["adapter", "AUC", "Logloss", "Σp/Σy", "AUC - base", "Logloss - base"]
    parts.append("<h3>Pooled over the day (AUC includes between-slot calibration)</h3>")
    parts.append(table(headers, rows))
    filled = [
        [
            name,
            f"{o['buckets_used_mean']:,.0f} of {o['buckets_per_array']:,}",
            fmt(o["rows_per_read_p50"]),
            fmt(o["rows_per_read_p90"]),
            fmt(o["empty_read_share"]),
        ]
        for name, o in payload.get("occupancy", {}).items()
    ]
    if filled:
        headers = ["memory", "buckets used / array", "rows/read p50", "p90", "empty reads"]
        parts.append(table(headers, filled))
    return "".join(parts)
