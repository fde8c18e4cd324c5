"""`reloop serve` in process: scores equal `reloop score`'s, bad requests get a 4xx naming the
field, a swap never mixes versions, and what was shown is logged."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import polars as pl
import pytest

from reloop_cli.data.ingest import ingest
from reloop_cli.operations.deploy import publish_live
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from reloop_cli.training.train import Lineage, train_version
from reloop_cli.versions.score import score_day
from tests.serving.conftest import JSON, client_for

FIELDS = ["user_id", "item_id", "category", "hour", "device", "position"]


def scored_by_server(client, rows: list[dict]) -> np.ndarray:
    pctr = []
    for start in range(0, len(rows), 500):
        answer = client.post("/score", json={"candidates": rows[start : start + 500]})
        assert answer.status_code == 200, answer.text
        pctr += [c["pctr"] for c in answer.json()["candidates"]]
    return np.array(pctr)


def test_score_equals_reloop_score_on_the_sample(published, tiny_logs):
    ws, spec = published
    raw = pl.read_parquet(tiny_logs[2])
    score_day(ws, 1, "2024-01-03")
    reference = ws.scan_scores(1, "2024-01-03").collect()
    as_logged = spec.override("serving", position_field="")  # each row at its logged position
    with client_for(ws, as_logged) as client:
        served = scored_by_server(client, raw.select(FIELDS).to_dicts())
    expected = dict(zip(reference["impression_id"], reference["pctr"], strict=True))
    want = np.array([expected[i] for i in raw["impression_id"]])
    assert np.abs(served - want).max() <= 1e-6


@pytest.mark.slow
def test_score_equals_reloop_score_with_hashed_multivalued_and_numeric_fields(tmp_path):
    rng = np.random.default_rng(0)
    rows = 4_000
    frame = pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(rows)],
            "ts": 1_704_067_200 + np.sort(rng.integers(0, 3 * 86_400, rows)),
            "user": [f"u{u}" for u in rng.integers(0, 300, rows)],
            "site": [f"s{s}" for s in rng.integers(0, 50, rows)],
            "tags": [
                [f"t{t}" for t in rng.integers(0, 20, rng.integers(0, 5))] for _ in range(rows)
            ],
            "price": rng.lognormal(2, 1, rows),
            "click": (rng.random(rows) < 0.2).astype(np.int8),
        }
    )
    path = tmp_path / "logs.parquet"
    frame.write_parquet(path)
    spec = spec_from_dict(
        {
            "data": {
                "label": "click",
                "categorical": ["user", "site"],
                "numeric": ["price"],
                "multivalued": ["tags"],
                "max_values": 3,
                "time_column": "ts",
                "impression_id": "id",
            },
            "model": {"embedding_dim": 4, "hidden_units": [8]},
            "train": {"epochs": 1, "validation_fraction": 0.0, "loss": "bce"},
            "vocabulary": {"hash_buckets": {"site": 17}},
        }
    )
    ws = Workspace(tmp_path / "ws")
    ingest(ws, spec, [path])
    with Registry(ws) as registry:
        train_version(ws, registry, spec, "2024-01-02")
        publish_live(ws, registry)
    score_day(ws, 1, "2024-01-03")
    reference = ws.scan_scores(1, "2024-01-03").collect()
    day = frame.filter(pl.col("id").is_in(reference["impression_id"].to_list()))
    with client_for(ws, spec) as client:
        served = scored_by_server(client, day.select("user", "site", "tags", "price").to_dicts())
    expected = dict(zip(reference["impression_id"], reference["pctr"], strict=True))
    assert np.abs(served - np.array([expected[i] for i in day["id"]])).max() <= 1e-6


@pytest.mark.parametrize(
    "body,status,says",
    [
        (b"{not json", 400, "body: not valid JSON"),
        (b"[1, 2]", 400, "body: must be a JSON object"),
        (b'{"candidates": [{"item_id": NaN}]}', 400, "NaN is not a JSON number"),
        (b"{}", 422, "candidates: missing"),
        (b'{"candidates": []}', 422, "candidates: empty"),
        (b'{"candidates": {"item_id": "1"}}', 422, "candidates: must be a list"),
        (b'{"candidates": [7]}', 422, "candidates[0]: must be an object"),
        (b'{"candidates": [{"itme_id": "1"}]}', 422, "candidates[0].itme_id: no such field"),
        (b'{"context": [], "candidates": [{}]}', 422, "context: must be an object"),
        (b'{"candidates": [{"item_id": {"a": 1}}]}', 422, "candidates[0].item_id: a value is"),
        (b'{"candidates": [{}], "slots": 2}', 422, "slots: must be a whole number in 1..1"),
        (b'{"candidates": [{}], "time": 5}', 422, "time: this server sets the time"),
        (b'{"candidates": [{"hour": ' + b"9" * 5_000 + b"}]}", 400, "body: a number has too"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "body: nested too deeply"),
        (b'{"candidates": [{"item_id": "\\ud800"}]}', 400, "candidates[0].item_id: holds a lone"),
        (b'{"candidates": [{"item_id": 1' + b"0" * 1_500 + b"}]}", 422, "candidates[0].item_id: a"),
        (b'{"candidates": [{}], "extra": 1}', 400, "extra: unknown field"),
        (b'{"request_id": 5, "candidates": [{}]}', 422, "request_id: must be a string"),
    ],
)
def test_a_bad_request_gets_a_4xx_naming_the_field(published, body, status, says):
    ws, spec = published
    with client_for(ws, spec) as client:
        answer = client.post("/score", content=body, headers=JSON)
        assert answer.status_code == status
        assert (
            answer.json()["error"].startswith(says.split(" ...")[0])
            or says in answer.json()["error"]
        )
        assert client.post("/score", json={"candidates": [{"item_id": "1"}]}).status_code == 200


def test_bodies_and_lists_over_their_limits_are_refused(published):
    ws, spec = published
    small = spec.override("serving", max_candidates=3, max_body_bytes=2_000, max_text_chars=10)
    with client_for(ws, small) as client:
        many = client.post("/score", json={"candidates": [{}] * 4})
        assert (
            many.status_code == 413 and "candidates: 4, over serving.max_candidates 3" in many.text
        )
        big = client.post("/score", content=b'{"candidates": [{}]}' + b" " * 3_000, headers=JSON)
        assert big.status_code == 413 and "over serving.max_body_bytes 2,000" in big.text
        long = client.post("/score", json={"candidates": [{"item_id": "x" * 11}]})
        assert long.status_code == 422 and "candidates[0].item_id: 11 characters" in long.text


def test_values_never_seen_get_the_out_of_vocabulary_row(published):
    ws, spec = published
    with client_for(ws, spec) as client:
        answer = client.post(
            "/score",
            json={
                "context": {"user_id": "never-seen", "hour": 99},
                "candidates": [{"item_id": "nope-1"}, {"item_id": "nope-2"}, {}],
            },
        )
    assert answer.status_code == 200
    pctr = [c["pctr"] for c in answer.json()["candidates"]]
    assert pctr[0] == pctr[1] == pctr[2]  # every unseen value reads row 0, like a missing one


def test_a_slate_is_chosen_by_the_policy_with_its_propensities(published):
    ws, spec = published
    rows = [{"item_id": f"{i:06d}", "user_id": "00003"} for i in range(20)]
    with client_for(ws, spec) as client:
        greedy = client.post("/score", json={"candidates": rows, "slots": 3}).json()
    pctr = np.array([c["pctr"] for c in greedy["candidates"]])
    assert [s["candidate"] for s in greedy["slate"]] == list(np.argsort(-pctr, kind="stable")[:3])
    assert [s["propensity"] for s in greedy["slate"]] == [1.0, 1.0, 1.0]
    assert [s["position"] for s in greedy["slate"]] == [1, 2, 3]
    explore = spec.override("serving", policy="epsilon", epsilon=1.0)
    with client_for(ws, explore, seed=4) as client:
        random = client.post("/score", json={"candidates": rows, "slots": 2}).json()
    assert [round(s["propensity"], 6) for s in random["slate"]] == [
        round(1 / 20, 6),
        round(1 / 19, 6),
    ]


def test_what_was_shown_and_clicked_is_logged(published):
    ws, spec = published
    with client_for(ws, spec.override("serving", position_field="position")) as client:
        answer = client.post(
            "/score",
            json={
                "request_id": "req-1",
                "context": {"user_id": "00001"},
                "candidates": [{"item_id": "000001"}, {"item_id": "000002"}],
                "slots": 1,
            },
        ).json()
        shown = answer["slate"][0]["impression_id"]
        assert client.post("/feedback", json={"clicks": [shown]}).json() == {"accepted": 1}
        assert client.post("/feedback", json={"clicks": []}).status_code == 422
    impressions = pl.read_parquet(ws.serving_logs / "impressions" / "*" / "*.parquet")
    assert impressions.height == 1  # only the shown one
    row = impressions.row(0, named=True)
    assert row["impression_id"] == shown and row["request_id"] == "req-1"
    assert row["served_version"] == 1 and row["slot"] == 1 and row["position"] == "1"
    assert row["served_pctr"] == pytest.approx(answer["slate"][0]["pctr"])
    clicks = pl.read_parquet(ws.serving_logs / "clicks" / "*" / "*.parquet")
    assert clicks["impression_id"].to_list() == [shown]


def test_a_cold_start_serves_at_random_and_logs_it(tmp_path, sample_spec):
    """Before any version is published, `serving.cold_start = "random"` serves uniformly at
    random with the propensities of that draw, and logs what it showed without a served pCTR:
    the first version's training data."""
    empty = Workspace(tmp_path / "empty")
    spec = sample_spec.override("serving", cold_start="random", position_field="position", seed=3)
    candidates = [{"item_id": f"{i:06d}"} for i in range(4)]
    with client_for(empty, spec) as client:
        health = client.get("/health").json()
        assert health["ready"] and health["cold_start"] and health["version"] is None
        body = {"context": {"user_id": "00001", "hour": 9}, "candidates": candidates, "slots": 2}
        shown = [client.post("/score", json=body).json() for _ in range(40)]
    assert all(answer["version"] is None for answer in shown)
    assert [e["propensity"] for e in shown[0]["slate"]] == [0.25, pytest.approx(1 / 3)]
    firsts = {answer["slate"][0]["candidate"] for answer in shown}
    assert firsts == {0, 1, 2, 3}  # uniform, not ranked: every candidate led some slate
    logged = pl.read_parquet(empty.serving_logs / "impressions" / "*" / "*.parquet")
    assert logged.height == 80 and logged["served_pctr"].null_count() == 80
    assert (
        logged.schema["served_pctr"] == pl.Float64 and logged.schema["served_version"] == pl.Int64
    )
    assert logged["hour"].to_list()[0] == "9" and sorted(set(logged["position"])) == ["1", "2"]


def test_health_and_metrics(tmp_path, published):
    ws, spec = published
    empty = Workspace(tmp_path / "empty")
    with client_for(empty, spec) as client:
        assert client.get("/health/live").status_code == 200  # alive: do not restart it
        not_ready = client.get("/health/ready")
        assert not_ready.status_code == 503 and client.get("/health").status_code == 503
        assert not_ready.json()["reasons"] == ["no version is published yet"]
        assert client.post("/score", json={"candidates": [{}]}).status_code == 503
    with client_for(ws, spec) as client:
        health = client.get("/health").json()
        assert health["ready"] and health["version"] == 1
        client.post("/score", json={"candidates": [{}]})
        client.post("/score", content=b"nope", headers=JSON)
        client.get("/nowhere")
        text = client.get("/metrics").text
    assert 'reloop_requests_total{route="score",status="200"} 1.0' in text
    assert 'reloop_requests_total{route="score",status="400"} 1.0' in text
    assert 'reloop_requests_total{route="other",status="404"} 1.0' in text
    assert "reloop_live_version 1.0" in text and "reloop_request_seconds_bucket" in text
    assert "reloop_swaps_total 1.0" in text  # counters end in _total
    assert 'reloop_logged_rows_total{kind="impressions"}' in text
    assert 'reloop_log_write_failures_total{kind="impressions"} 0.0' in text


@pytest.mark.slow
def test_a_swap_during_a_stream_of_requests_never_mixes_versions(published, tiny_logs):
    ws, spec = published
    rows = pl.read_parquet(tiny_logs[2]).select(FIELDS).head(50).to_dicts()
    answers, failures = [], []
    fast = spec.override("serving", reload_seconds=0.05)
    with client_for(ws, fast) as client:
        stop = threading.Event()

        def stream():
            while not stop.is_set():
                answer = client.post("/score", json={"candidates": rows})
                (answers if answer.status_code == 200 else failures).append(answer)

        worker = threading.Thread(target=stream)
        worker.start()
        time.sleep(0.3)
        with Registry(ws) as registry:
            train_version(ws, registry, spec, "2024-01-03", Lineage(promote=True))
            publish_live(ws, registry)
        deadline = time.time() + 20
        while time.time() < deadline and not any(a.json()["version"] == 2 for a in answers[-5:]):
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        worker.join()
    assert failures == []
    versions = {a.json()["version"] for a in answers}
    assert versions == {1, 2}
    truth: dict[int, list[float]] = {}
    for answer in answers:  # every response is one version's scores, whole
        payload = answer.json()
        pctr = [c["pctr"] for c in payload["candidates"]]
        truth.setdefault(payload["version"], pctr)
        assert pctr == truth[payload["version"]]
    assert truth[1] != truth[2]
    assert json.loads(ws.live_pointer.read_text())["version"] == 2
