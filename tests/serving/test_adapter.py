"""An adapter in `reloop serve`: it answers with corrected pCTRs once labels have arrived,
writes an impression only when its attribution window has closed, stays bounded, and starts
empty with each new version."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.operations.deploy import publish_live
from reloop_cli.serving.requests import TimeBounds, parse_score
from reloop_cli.serving.service import Service, ServiceConfig
from reloop_cli.store.registry import Registry
from reloop_cli.training.train import Lineage, train_version
from tests.serving.conftest import client_for

FIELDS = ["user_id", "item_id", "category", "hour", "device", "position"]
T0 = 1_704_240_000.0  # 2024-01-03 00:00 UTC
WINDOW = 1_800.0  # data.attribution_window = "30m"


def score(client, rows, at):
    answer = client.post("/score", json={"candidates": rows, "time": at})
    assert answer.status_code == 200, answer.text
    return answer.json()


def adapter_counts(client) -> dict[str, float]:
    text = client.get("/metrics").text
    counts = {}
    for line in text.splitlines():
        if line.startswith("reloop_adapter_rows{"):
            kind = line.split('kind="')[1].split('"')[0]
            counts[kind] = float(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.parametrize("adapter", ["intercept", "field_bias", "reloop2"])
def test_clicks_change_the_answers_only_after_their_window_closes(published, tiny_logs, adapter):
    ws, spec = published
    rows = pl.read_parquet(tiny_logs[2]).select(FIELDS).head(40).to_dicts()
    spec = spec.override("serving", adapter=adapter, position_field="")
    spec = spec.override("adapt", memory_bits=4, memory_arrays=8, intercept_window_rows=1_000)
    with client_for(ws, spec, trust_client_time=True) as client:
        first = score(client, rows, T0)
        base = np.array([c["pctr"] for c in first["candidates"]])
        # every shown impression is clicked: the day clicks far more than the version thinks
        ids = [c["impression_id"] for c in first["candidates"]]
        clicks = [{"impression_id": i, "time": T0 + 60} for i in ids]
        assert client.post("/feedback", json={"clicks": clicks}).json() == {"accepted": 40}
        inside = score(client, rows, T0 + WINDOW - 1)  # the window is still open: not written
        assert [c["pctr"] for c in inside["candidates"]] == list(base)
        assert adapter_counts(client)["written"] == 0
        after = score(client, rows, T0 + WINDOW + 1)  # the first request's window has closed
        corrected = np.array([c["pctr"] for c in after["candidates"]])
        assert adapter_counts(client)["written"] == 40
        assert adapter_counts(client)["held"] == 80
        assert np.all(corrected >= base) and corrected.mean() > base.mean() + 0.01
        assert client.get("/health").json()["adapter"] == adapter
    impressions = pl.read_parquet(ws.serving_logs / "impressions" / "*" / "*.parquet")
    last = impressions.filter(pl.col("ts") == T0 + WINDOW + 1).sort("impression_id")
    # the log keeps the version's own pCTR (tomorrow's ỹ_last) beside what was answered
    assert np.allclose(np.sort(last["served_pctr"].to_numpy()), np.sort(base))
    assert np.allclose(np.sort(last["adapted_pctr"].to_numpy()), np.sort(corrected))


def test_held_impressions_are_bounded_and_a_new_version_starts_empty(published, tiny_logs):
    ws, spec = published
    rows = pl.read_parquet(tiny_logs[2]).select(FIELDS).head(30).to_dicts()
    spec = spec.override("serving", adapter="intercept", adapter_pending_rows=25)
    service = Service(ServiceConfig(ws.serving, ws.serving_logs, spec, trust_client_time=True))
    assert service.reload()

    def request(at: float):
        body = {"candidates": rows, "time": at}
        return parse_score(body, spec.data.feature_fields, spec.serving, TimeBounds(spec.data))

    service.score(request(T0))
    adapter = service.live.adapter
    assert (len(adapter.held), adapter.dropped, adapter.written) == (25, 5, 0)
    service.score(request(T0 + WINDOW + 1))  # the 25 held are written, unclicked
    assert adapter.written == 25 and adapter.adapter.shift < 0
    with Registry(ws) as registry:
        train_version(ws, registry, spec, "2024-01-03", Lineage(promote=True))
        publish_live(ws, registry)
    assert service.reload()
    fresh = service.live.adapter
    assert service.live.version == 2 and fresh is not adapter
    assert (len(fresh.held), fresh.written, fresh.adapter.shift) == (0, 0, 0.0)
    service.stop()


def test_serve_refuses_an_adapter_it_cannot_run(published):
    ws, _ = published
    runner = CliRunner()
    bad = runner.invoke(app, ["serve", "-w", str(ws.root), "--adapter", "incremental"])
    assert bad.exit_code != 0 and "serving.adapter" in bad.output
    many = runner.invoke(
        app, ["serve", "-w", str(ws.root), "--adapter", "reloop2", "--workers", "2"]
    )
    assert many.exit_code != 0 and "--workers 1" in many.output
