"""The vocabulary's life cycle: eviction, re-admission, capacity, row reuse, versions' views,
warm start across an eviction, stable hashing."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
import torch

from reloop_cli.features import hashing, vocabulary
from reloop_cli.features.encoding import encode
from reloop_cli.features.tokens import OOV_INDEX
from reloop_cli.spec.pipeline import spec_from_dict
from tests.helpers import REPO


def spec(**rules):
    return spec_from_dict(
        {"data": {"categorical": ["site", "app"]}, "vocabulary": rules}, "vocab.toml"
    )


def day(name: str, *sites: str) -> pl.LazyFrame:
    return pl.LazyFrame(
        {"site": list(sites), "app": ["x"] * len(sites), "day": [name] * len(sites)}
    )


def rows_of(refreshed: vocabulary.Refreshed, field: str = "site") -> dict[str, int]:
    view = refreshed.view.filter(pl.col("field") == field)
    return dict(zip(view["value"], view["index"], strict=True))


def test_a_value_not_seen_for_n_days_is_evicted_and_its_row_reused(ws):
    rules = spec(evict_after_days=2)
    first = vocabulary.refresh(ws, rules, day("2024-01-01", "a", "b"), "2024-01-01")
    assert rows_of(first) == {"a": 1, "b": 2}
    second = vocabulary.refresh(ws, rules, day("2024-01-02", "b"), "2024-01-02")
    assert rows_of(second) == {"a": 1, "b": 2}  # a unseen for 1 day: kept
    third = vocabulary.refresh(ws, rules, day("2024-01-03", "b", "c"), "2024-01-03")
    assert rows_of(third) == {"b": 2, "c": 1}  # a unseen for 2 days: evicted; c takes row 1
    assert third.fields["site"].to_dict() == {"live": 2, "admitted": 1, "evicted": 1}
    assert third.sizes[0] == 3  # the table stopped growing
    assert third.generation == second.generation + 1


def test_an_evicted_value_that_comes_back_is_admitted_fresh(ws):
    rules = spec(evict_after_days=1)
    vocabulary.refresh(ws, rules, day("2024-01-01", "a"), "2024-01-01")
    gone = vocabulary.refresh(ws, rules, day("2024-01-02", "b"), "2024-01-02")
    assert rows_of(gone) == {"b": 1}  # a evicted, b reuses its row
    back = vocabulary.refresh(ws, rules, day("2024-01-03", "a", "b"), "2024-01-03")
    assert rows_of(back) == {"b": 1, "a": 2}
    history = vocabulary.load(ws).filter(pl.col("value") == "a")
    assert history.select("index", "since", "until").rows() == [(1, 1, 2), (2, 3, None)]


def test_capacity_keeps_the_most_frequent_values_of_the_window(ws):
    rules = spec(max_rows={"site": 2})
    first = vocabulary.refresh(ws, rules, day("2024-01-01", *"aaaaabbbc"), "2024-01-01")
    assert rows_of(first) == {"a": 1, "b": 2}  # c cut
    second = vocabulary.refresh(ws, rules, day("2024-01-02", *"aacccc"), "2024-01-02")
    assert rows_of(second) == {"a": 1, "c": 2}  # c now more frequent than b, takes b's row
    assert rows_of(second, "app") == {"x": 1}  # the other field is unbounded
    assert second.sizes == [3, 2]


def test_an_update_run_twice_on_the_same_window_changes_nothing(ws):
    rules = spec(max_rows=2, evict_after_days=1)
    vocabulary.refresh(ws, rules, day("2024-01-01", *"aab"), "2024-01-01")
    once = vocabulary.refresh(ws, rules, day("2024-01-02", *"ccab"), "2024-01-02")
    twice = vocabulary.refresh(ws, rules, day("2024-01-02", *"ccab"), "2024-01-02")
    assert twice.vocab.equals(once.vocab) and twice.generation == once.generation


def test_each_version_encodes_with_the_rows_of_its_own_generation(ws):
    rules = spec(evict_after_days=1)
    old = vocabulary.refresh(ws, rules, day("2024-01-01", "a"), "2024-01-01")
    new = vocabulary.refresh(ws, rules, day("2024-01-02", "b"), "2024-01-02")  # b takes a's row
    rows = pl.LazyFrame({"site": ["a", "b"], "app": ["x", "x"]})
    vocab = vocabulary.load(ws)
    seen_by_old = encode(rows, rules, vocabulary.at(vocab, old.generation), old.sizes).collect()
    seen_by_new = encode(rows, rules, vocabulary.at(vocab, new.generation), new.sizes).collect()
    assert seen_by_old["site"].to_list() == [1, OOV_INDEX]  # b came after: unknown to it
    assert seen_by_new["site"].to_list() == [OOV_INDEX, 1]  # a was evicted before it trained
    compacted = vocabulary.refresh(
        ws, rules, day("2024-01-02", "b"), "2024-01-02", keep_from=new.generation
    )
    assert compacted.vocab.filter(pl.col("value") == "a").height == 0  # no live version needs it
    forgotten = encode(rows, rules, vocabulary.at(compacted.vocab, old.generation), old.sizes)
    assert forgotten.collect()["site"].to_list() == [OOV_INDEX, OOV_INDEX]  # never b's row


def test_fnv1a_matches_its_published_test_vectors():
    hashes = hashing.fnv1a64(pl.Series(["", "a", "foobar"]))
    assert [int(h) for h in hashes] == [
        0xCBF29CE484222325,
        0xAF63DC4C8601EC8C,
        0x85944171F73967E8,
    ]


def test_hashed_rows_are_the_same_in_another_process():
    values = ["device-1", "device-2", "é", "x" * 40]
    here = hashing.hashed_rows(pl.Series(values), 1_000).to_list()
    code = (
        "import polars as pl; from reloop_cli.features import hashing; "
        f"print(hashing.hashed_rows(pl.Series({values!r}), 1000).to_list())"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        check=True,
    ).stdout
    assert there.strip() == str(here)
    assert all(1 <= r <= 1_000 for r in here)


def test_a_hashed_field_keeps_no_vocabulary_and_encodes_by_hash(ws):
    rules = spec(hash_buckets={"site": 7})
    refreshed = vocabulary.refresh(ws, rules, day("2024-01-01", "a", "b"), "2024-01-01")
    assert refreshed.view.filter(pl.col("field") == "site").height == 0
    assert refreshed.sizes[0] == 8
    encoded = encode(day("2024-01-05", "a", "zzz"), rules, refreshed.view, refreshed.sizes)
    expected = hashing.hashed_rows(pl.Series(["a", "zzz"]), 7).to_list()
    assert encoded.collect()["site"].to_list() == expected


@pytest.mark.parametrize(
    "rules,message",
    [
        ({"hash_buckets": {"tags": 5}}, "hash_buckets.tags: a multivalued field"),
        ({"max_rows": {"nope": 5}}, "vocabulary.max_rows: names no categorical field: nope"),
        ({"evict_after_days": -1}, "vocabulary.evict_after_days: must be whole numbers >= 0"),
    ],
)
def test_bad_vocabulary_rules_are_refused_by_name(rules, message):
    from reloop_cli.errors import BadInput

    with pytest.raises(BadInput, match=message):
        spec_from_dict(
            {"data": {"categorical": ["site"], "multivalued": ["tags"]}, "vocabulary": rules},
            "v.toml",
        )


def test_warm_start_across_an_eviction_keeps_every_kept_values_vector(ws, tiny_logs, sample_spec):
    from reloop_cli.data.ingest import ingest
    from reloop_cli.models import build_model
    from reloop_cli.store.registry import Registry
    from reloop_cli.training.train import train_version
    from reloop_cli.training.warm_start import warm_start
    from reloop_cli.versions.checkpoint import load_version

    rules = sample_spec.override("vocabulary", evict_after_days=1, max_rows={"item_id": 60})
    ingest(ws, rules, tiny_logs)
    with Registry(ws) as registry:
        parent = train_version(ws, registry, rules.override("train", window_days=1), "2024-01-02")
        child_day = vocabulary.refresh(
            ws, rules, ws.scan_logs(["2024-01-03"]), "2024-01-03", save=False
        )
    loaded = load_version(ws, parent.version)
    parent_view = vocabulary.for_version(ws, loaded.meta)
    kept = parent_view.join(child_day.view, on=["field", "value", "index"])
    evicted = parent_view.join(child_day.view, on=["field", "value"], how="anti")
    assert kept.height and evicted.filter(pl.col("field") == "item_id").height  # both happen
    torch.manual_seed(1)
    child = build_model(rules.model, child_day.sizes, 0, [1] * 6)
    fresh = child.embedding.table.weight.detach().clone()
    warm_start(child, ws, parent.version, rules, child_day)
    parent_table = loaded.model.embedding.table.weight
    parent_offsets = [0, *torch.tensor(loaded.meta["field_sizes"]).cumsum(0).tolist()[:-1]]
    own_offsets = [0, *torch.tensor(child_day.sizes).cumsum(0).tolist()[:-1]]
    fields = ["user_id", "item_id", "category", "hour", "device", "position"]
    for name, value, row in kept.iter_rows():
        f = fields.index(name)
        assert torch.equal(
            child.embedding.table.weight[own_offsets[f] + row],
            parent_table[parent_offsets[f] + row],
        ), (name, value)
    reused = child_day.view.join(evicted.select("field", "index"), on=["field", "index"])
    for name, _, row in reused.iter_rows():  # a row an evicted value freed starts fresh
        f = fields.index(name)
        assert torch.equal(
            child.embedding.table.weight[own_offsets[f] + row], fresh[own_offsets[f] + row]
        )


def test_export_of_a_hashed_and_evicting_version_scores_like_reloop_score(
    ws, tiny_logs, sample_spec, tmp_path
):
    import json

    from reloop_cli.data.ingest import ingest
    from reloop_cli.features.encoding import to_tensors
    from reloop_cli.operations.export import export_version
    from reloop_cli.store.registry import Registry
    from reloop_cli.training.train import train_version
    from reloop_cli.versions.checkpoint import load_version
    from reloop_cli.versions.score import score_day
    from tests.helpers import run_exported

    rules = sample_spec.override(
        "vocabulary", hash_buckets={"user_id": 50}, evict_after_days=1
    ).override("train", warm_start=True, window_days=1)
    ingest(ws, rules, tiny_logs)
    with Registry(ws) as registry:
        train_version(ws, registry, rules, "2024-01-02")
        child = train_version(ws, registry, rules, "2024-01-03")
    meta = load_version(ws, child.version).meta
    assert meta["vocabulary"]["item_id"]["evicted"] > 0
    assert meta["vocabulary"]["user_id"] == {"live": 50, "hashed": 50}
    score_day(ws, child.version, "2024-01-04")
    target = tmp_path / "model.pt"
    export_version(ws, child.version, "torchscript", target)
    feature_map = json.loads((tmp_path / "model.pt.features.json").read_text())
    assert feature_map["hashed_fields"] == {"user_id": {"buckets": 50}}
    assert "user_id" not in feature_map["vocabulary"]
    rows = ws.scan_logs(["2024-01-04"])
    view = vocabulary.for_version(ws, meta)
    encoded = encode(
        rows, load_version(ws, child.version).spec, view, meta["field_sizes"]
    ).collect()
    users = rows.select("user_id").collect()["user_id"]
    assert encoded["user_id"].to_list() == hashing.hashed_rows(users, 50).to_list()
    items = feature_map["vocabulary"]["item_id"]
    from_map = [items.get(v, 0) for v in rows.select("item_id").collect()["item_id"]]
    assert encoded["item_id"].to_list() == from_map
    table = to_tensors(encoded, load_version(ws, child.version).spec)
    exported = run_exported(target, "torchscript", table.categorical, table.dense)
    served = ws.scan_scores(child.version, "2024-01-04").collect()["pctr"].to_numpy()
    assert abs(exported - served).max() < 1e-5
