"""`reloop serve` under real traffic, in process: every request answered 200 logs rows the next
night accepts, a failing write loses nothing and says so, a bug is a JSON 500 that is counted,
and writes must be JSON from no foreign origin."""

from __future__ import annotations

import polars as pl
import pytest

from reloop_cli.serving.logs import IMPRESSIONS
from reloop_cli.store.registry import Registry
from tests.serving.conftest import JSON, client_for

CANDIDATES = [{"item_id": f"{i:06d}", "user_id": "00002"} for i in range(5)]


def logged(ws) -> pl.DataFrame:
    files = sorted((ws.serving_logs / IMPRESSIONS).rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def test_a_request_without_slots_logs_rows_the_next_night_ingests(published):
    """Reproduction: one /score without `slots` logged a null propensity, and every later
    `reloop run --from-server` refused the joined file (`propensity '(empty)' not in (0, 1]`)."""
    from reloop_cli.operations.served_cycle import run_server_cycle

    ws, spec = published
    with client_for(ws, spec, trust_client_time=True) as client:
        for hour in range(3):
            time = 1_704_326_400 + hour * 3_600  # 2024-01-04
            ranked = {"candidates": CANDIDATES, "slots": 2, "time": time}
            assert client.post("/score", json=ranked).status_code == 200
            unranked = {"candidates": CANDIDATES, "time": time + 60}
            assert client.post("/score", json=unranked).status_code == 200
    rows = logged(ws)
    assert rows["propensity"].null_count() == 15  # unranked: not chosen by the policy
    assert rows.filter(pl.col("propensity").is_null())["slot"].null_count() == 15
    with Registry(ws) as registry:
        result = run_server_cycle(ws, registry, spec, as_of=1_704_499_200.0)  # 2024-01-06
    assert result.join["impressions"] == 21
    assert not list(ws.quarantine.rglob("*.parquet")) if ws.quarantine.exists() else True
    ingested = ws.scan_logs(["2024-01-04"]).collect()
    assert ingested.height == 21 and ingested["propensity"].null_count() == 15


def test_a_time_no_log_can_hold_is_refused_before_anything_is_answered(published):
    """Reproduction: with --trust-client-time, `"time": 1e12` was answered 200, then killed
    the writer thread (year 33658 is out of range) and lost every row buffered before it."""
    ws, spec = published
    with client_for(ws, spec, trust_client_time=True) as client:
        good = {"candidates": CANDIDATES, "time": 1_704_326_400}
        assert client.post("/score", json=good).status_code == 200
        for bad in (1e12, -1e12, 1e308, 10**400):
            answer = client.post("/score", json={"candidates": CANDIDATES, "time": bad})
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"].startswith("time: ")
        click = {"clicks": [{"impression_id": "x", "time": 1e12}]}
        refused = client.post("/feedback", json=click)
        assert refused.status_code == 422 and "clicks[0].time:" in refused.json()["error"]
        assert client.post("/score", json=good).status_code == 200
    assert logged(ws).height == 10  # both good requests, written at shutdown


def test_a_failing_write_keeps_its_rows_and_says_so_until_it_writes_again(published):
    """Reproduction: flush() took the rows out of the buffer before writing, so a full disk or
    any write error lost them, and /health stayed 200."""
    ws, spec = published
    quick = spec.override("serving", flush_rows=5, flush_seconds=0.1)
    with client_for(ws, quick, trust_client_time=True) as client:
        day = ws.serving_logs / IMPRESSIONS / "day=2024-01-04"
        day.parent.mkdir(parents=True, exist_ok=True)
        day.write_text("a file where the day's folder goes: every write there fails")
        for minute in range(4):
            body = {"candidates": CANDIDATES, "time": 1_704_326_400 + 60 * minute}
            assert client.post("/score", json=body).status_code == 200
        service = client.service
        service.impressions.flush()
        assert service.impressions.health.failing and len(service.impressions.rows) == 20
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert any("impressions log: writes failing" in r for r in ready.json()["reasons"])
        assert client.get("/health/live").status_code == 200
        text = client.get("/metrics").text
        assert 'reloop_log_write_failures_total{kind="impressions"}' in text
        assert 'reloop_log_write_failures_total{kind="impressions"} 0.0' not in text
        day.unlink()  # the disk recovers
        service.impressions._retry_at = 0.0
        assert service.impressions.flush() == 20
        assert client.get("/health/ready").status_code == 200
    rows = logged(ws)
    assert rows.height == 20 and rows["impression_id"].n_unique() == 20
    assert rows["ts"].to_list() == sorted(rows["ts"].to_list())  # in the order they came


def test_rows_are_dropped_only_past_the_shutdown_grace_and_then_counted(published):
    ws, spec = published
    brief = spec.override("serving", shutdown_seconds=0.5)
    client = client_for(ws, brief, trust_client_time=True)
    with client:
        (ws.serving_logs / IMPRESSIONS).mkdir(parents=True, exist_ok=True)
        (ws.serving_logs / IMPRESSIONS / "day=2024-01-04").write_text("never a folder")
        body = {"candidates": CANDIDATES, "time": 1_704_326_400}
        assert client.post("/score", json=body).status_code == 200
        service = client.service
    assert service.impressions.health.dropped == 5
    assert service.metrics.dropped.labels("impressions")._value.get() == 5


def test_a_bug_is_a_json_500_that_is_logged_and_counted(published, monkeypatch):
    ws, spec = published
    with client_for(ws, spec) as client:
        service = client.service

        def broken(request):
            raise ZeroDivisionError("planted")

        monkeypatch.setattr(service, "score", broken)
        answer = client.post("/score", json={"candidates": CANDIDATES})
        assert answer.status_code == 500
        assert answer.json() == {
            "error": "internal error: ZeroDivisionError (see the server's log)"
        }
        assert client.post("/feedback", json={"clicks": ["x"]}).status_code == 200
        text = client.get("/metrics").text
    assert 'reloop_requests_total{route="score",status="500"} 1.0' in text


@pytest.mark.parametrize(
    "headers,status,says",
    [
        ({"Content-Type": "text/plain"}, 415, "content-type: 'text/plain'"),
        ({}, 415, "content-type: missing"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "content-type: 'application"),
        ({**JSON, "Origin": "http://evil.example"}, 403, "origin: writes from 'http://evil"),
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 415, "content-type"),
    ],
)
def test_writes_are_json_from_no_foreign_origin(published, headers, status, says):
    """Reproduction: /feedback took `Content-Type: text/plain` from any Origin, so a page open
    in a browser on the serving host could post clicks (a CORS simple request)."""
    ws, spec = published
    body = b'{"clicks": ["x"]}'
    with client_for(ws, spec) as client:
        for route in ("/feedback", "/score"):
            answer = client.post(route, content=body, headers=headers)
            assert answer.status_code == status
            assert answer.json()["error"].startswith(says)
        fine = client.post("/feedback", content=body, headers=JSON)
        assert fine.status_code == 200
    assert (
        not (ws.serving_logs / "clicks").exists()
        or len(list((ws.serving_logs / "clicks").rglob("*.parquet"))) == 1
    )


def test_an_allowed_origin_and_the_token_let_a_write_through(published):
    ws, spec = published
    trusting = spec.override("serving", allowed_origins=("https://ops.example",))
    with client_for(ws, trusting, token="s3cret") as client:
        page = {**JSON, "Origin": "https://ops.example"}
        assert client.post("/feedback", json={"clicks": ["x"]}, headers=page).status_code == 401
        signed = {**page, "Authorization": "Bearer s3cret"}
        assert client.post("/feedback", json={"clicks": ["x"]}, headers=signed).status_code == 200
        wrong = {**JSON, "Authorization": "Bearer guess"}
        answer = client.post("/feedback", json={"clicks": ["x"]}, headers=wrong)
        assert answer.status_code == 401 and "authorization:" in answer.json()["error"]
        assert client.get("/health/ready").status_code == 200  # reads need no token
