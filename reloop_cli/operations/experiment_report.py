"""The report's section on online experiments: each one's nightly lift with its confidence
sequence (the band the decisions read) and fixed-sample interval, and a table of every look."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt

from reloop_cli.operations.html_parts import fmt, png, table


def _curve(entry: dict) -> str | None:
    looks = [look for look in entry["looks_taken"] if (look["evidence"] or {}).get("lift")]
    if not looks:
        return None
    nights = [look["look"] for look in looks]
    lifts = [look["evidence"]["lift"] for look in looks]
    figure, axis = plt.subplots(figsize=(7, 3))
    axis.fill_between(
        nights,
        [lift["sequence_low"] for lift in lifts],
        [lift["sequence_high"] for lift in lifts],
        alpha=0.25,
        label="confidence sequence (decides)",
    )
    axis.plot(nights, [lift["fixed_low"] for lift in lifts], "k:", linewidth=0.8)
    axis.plot(
        nights, [lift["fixed_high"] for lift in lifts], "k:", linewidth=0.8, label="95% one night"
    )
    axis.plot(nights, [lift["value"] for lift in lifts], "o-", label="lift")
    margin = entry["settings"].get("margin")
    axis.axhline(0.0, color="grey", linewidth=0.8)
    if margin:
        axis.axhline(-margin, color="red", linewidth=0.8, linestyle="--", label="-margin")
    axis.set_xlabel("night")
    axis.set_ylabel("CTR lift, candidate vs live")
    axis.legend(fontsize=7)
    return png(figure)


def experiments_section(experiments: list[dict]) -> str:
    """Every recent experiment: its curve and its looks ('' when there has been none)."""
    if not experiments:
        return ""
    parts = ["<h2>Online experiments</h2>"]
    for entry in experiments:
        parts.append(
            f"<h3>{html.escape(entry['id'])}: v{entry['candidate']} vs v{entry['live']} "
            f"({html.escape(entry['mode'])}, {html.escape(entry['status'])})</h3>"
        )
        curve = _curve(entry)
        if curve:
            parts.append(f'<img alt="experiment lift" src="{curve}">')
        rows = []
        for look in entry["looks_taken"]:
            found = look["evidence"] or {}
            arms, lift = found.get("arms") or {}, found.get("lift") or {}
            rows.append(
                [
                    look["look"],
                    look["stage"],
                    fmt((arms.get("live") or {}).get("ctr")),
                    fmt((arms.get("candidate") or {}).get("ctr")),
                    fmt(lift.get("value")),
                    f"[{fmt(lift.get('sequence_low'))}, {fmt(lift.get('sequence_high'))}]",
                    look["decision"],
                ]
            )
        headers = ["night", "stage", "CTR live", "CTR cand.", "lift", "sequence", "decision"]
        parts.append(table(headers, rows))
    return "".join(parts)
