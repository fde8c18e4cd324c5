"""The report's section on the last `reloop replay`: each adapter's lift over the unadapted
version slot by slot (with its paired interval as a band), and the pooled table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from reloop_cli.evaluation.statistics import format_interval
from reloop_cli.operations.html_parts import fmt, png, table

REPLAY_FILE = "replay.json"  # where `reloop replay` keeps its last result, under reports/


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
    """The last replay: per-slot lifts over base, and the pooled table."""
    parts = ["<h2>Replay: each adapter against the unadapted version, slot by slot</h2>"]
    for metric, label in (("auc", "AUC - base"), ("logloss", "Logloss - base")):
        parts.append(f'<img alt="plot" src="{replay_plot(payload, metric, label)}">')
    rows = []
    for name, entry in payload["pooled"].items():
        versus = entry.get("vs_base")
        rows.append(
            [
                name,
                fmt(entry["auc"]["value"]),
                fmt(entry["logloss"]["value"]),
                fmt(entry["calibration"]),
                format_interval(versus["auc"], signed=True) if versus else "-",
                format_interval(versus["logloss"], signed=True) if versus else "-",
            ]
        )
    headers = ["adapter", "AUC", "Logloss", "Σp/Σy", "AUC - base", "Logloss - base"]
    parts.append(table(headers, rows))
    return "".join(parts)
