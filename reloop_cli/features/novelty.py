"""How much of a day is new: per field, the share of its rows whose value none of the days before
it held. A day of fresh items moves it a little; a field whose values changed form upstream (a
renamed category, an id that gained a prefix) moves it to nearly all at once, and every such row
is scored with the out-of-vocabulary row. `reloop run` reports it every night and warns on a
jump, which a silently broken feed shows first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from reloop_cli.features.vocabulary import value_counts
from reloop_cli.spec.layout import categorical_fields
from reloop_cli.spec.pipeline import Spec
from reloop_cli.store.workspace import Workspace

# A rise of the new share by this much from one day to the next is called a jump.
NEW_VALUE_JUMP = 0.2


@dataclass(frozen=True)
class FieldNovelty:
    """One field's share of new values on a day, and on the day before (None: no history)."""

    share: float
    previous: float | None

    @property
    def jumped(self) -> bool:
        return self.previous is not None and self.share - self.previous >= NEW_VALUE_JUMP

    def to_dict(self) -> dict:
        return {**asdict(self), "jumped": self.jumped}


def new_value_share(ws: Workspace, spec: Spec, name: str, day: str, lookback: int) -> float | None:
    """The share of `day`'s lookups of field `name` whose value the `lookback` days before it
    never held; None when there is no earlier day."""
    earlier = [d for d in ws.days() if d < day][-lookback:]
    if not earlier:
        return None
    today = value_counts(spec, name, ws.scan_logs([day]))
    if today.height == 0:
        return 0.0
    before = value_counts(spec, name, ws.scan_logs(earlier)).select("value")
    new = today.join(before, on="value", how="anti")["seen"].sum()
    return float(new / today["seen"].sum())


def novelty(ws: Workspace, spec: Spec, day: str) -> dict[str, FieldNovelty]:
    """Per categorical field (hashed ones too: a form change breaks them the same way), the new
    share on `day` and on the day before, each against the spec's training window of days."""
    held = [d for d in ws.days() if d <= day]
    previous_day = held[-2] if len(held) > 1 else None
    report = {}
    for name in categorical_fields(spec):
        share = new_value_share(ws, spec, name, day, spec.train.window_days)
        if share is None:
            continue
        before = (
            new_value_share(ws, spec, name, previous_day, spec.train.window_days)
            if previous_day
            else None
        )
        report[name] = FieldNovelty(round(share, 4), None if before is None else round(before, 4))
    return report


def jumps(report: dict[str, FieldNovelty]) -> list[str]:
    """One warning line per field whose new share jumped."""
    return [
        f"{name}: {entry.share:.0%} of the day's values are new (the day before: "
        f"{entry.previous:.0%}); has the field's form changed upstream?"
        for name, entry in report.items()
        if entry.jumped
    ]
