"""A multivalued field (a list of tags): ingested as a list, one vocabulary, mean-pooled rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from reloop_cli.cli import app
from reloop_cli.data.ingest import ingest
from reloop_cli.errors import BadInput
from reloop_cli.evaluation.metrics import auc
from reloop_cli.features import vocabulary
from reloop_cli.features.encoding import encode, to_tensors
from reloop_cli.models import MODELS, build_model
from reloop_cli.models.layers import FieldEmbedding
from reloop_cli.spec.layout import field_slots
from reloop_cli.spec.pipeline import spec_from_dict
from reloop_cli.spec.sections import ModelSpec
from tests.helpers import run_exported

SPEC = spec_from_dict(
    {
        "data": {
            "label": "click",
            "categorical": ["user"],
            "multivalued": ["tags"],
            "max_values": 3,
            "time_column": "ts",
        },
        "model": {"name": "deepfm", "embedding_dim": 8, "hidden_units": [16]},
        "train": {"epochs": 4, "batch_size": 128, "learning_rate": 0.01, "window_days": 2},
    },
    "tags.toml",
)
DAY = 86_400
START = 1_704_067_200  # 2024-01-01 00:00 UTC


def tagged_logs(days: int, rows: int, seed: int = 0) -> pl.DataFrame:
    """Clicks that depend on the tags only: each of tags t0-t9 lifts the logit, the rest do not;
    users carry no signal."""
    rng = np.random.default_rng(seed)
    n = days * rows
    tag_lists, logits = [], []
    for _ in range(n):
        picked = rng.choice(30, size=rng.integers(0, 5), replace=False)
        tag_lists.append("|".join(f"t{t}" for t in picked))
        logits.append(-1.5 + 1.2 * sum(t < 10 for t in picked))
    prob = 1 / (1 + np.exp(-np.array(logits)))
    return pl.DataFrame(
        {
            "ts": START + np.repeat(np.arange(days), rows) * DAY + rng.integers(0, DAY, n),
            "user": rng.integers(0, 20, n).astype(str),
            "tags": tag_lists,
            "click": (rng.random(n) < prob).astype(np.int8),
        }
    )


def test_a_tag_fields_vector_is_the_mean_of_its_known_tags_rows():
    layer = FieldEmbedding([4, 6], n_dense=0, dim=2, slots=[1, 3])
    with torch.no_grad():
        layer.table.weight.copy_(torch.arange(20, dtype=torch.float32).reshape(10, 2))
    categorical = torch.tensor([[1, 2, 5, 0], [3, 0, 0, 0], [0, 5, 2, 0]])
    out = layer(categorical, torch.zeros(3, 0))
    table = layer.table.weight.detach()
    assert out.shape == (3, 2, 2)
    assert torch.equal(out[:, 0], table[[1, 3, 0]])  # single-valued: row 0 (OOV) is a real row
    assert torch.allclose(out[0, 1], (table[4 + 2] + table[4 + 5]) / 2)  # padding skipped
    assert torch.equal(out[1, 1], torch.zeros(2))  # no known tag: the zero vector
    assert torch.allclose(out[2, 1], out[0, 1])  # the order of the tags does not matter


def test_tags_from_strings_and_list_columns_encode_to_padded_index_columns(ws, tmp_path):
    csv = tmp_path / "a.csv"
    pl.DataFrame(
        {"ts": [START] * 3, "user": ["u1", "u2", "u1"], "tags": ["x|y", "", "y| z |w|x"]}
    ).with_columns(click=pl.Series([1, 0, 1])).write_csv(csv)
    parquet = tmp_path / "b.parquet"
    pl.DataFrame(
        {"ts": [START + DAY] * 2, "user": ["u1", "u3"], "tags": [["z", "q"], None], "click": [0, 1]}
    ).write_parquet(parquet)
    ingest(ws, SPEC, [csv, parquet])
    stored = ws.scan_logs(ws.days()).collect().sort("ts")
    assert stored["tags"].to_list() == [["x", "y"], [], ["y", "z", "w", "x"], ["z", "q"], []]

    refreshed = vocabulary.refresh(ws, SPEC, ws.scan_logs(ws.days()[:1]), None)  # day 1: no q
    vocab = refreshed.view
    tags = vocab.filter(pl.col("field") == "tags")
    assert dict(zip(tags["value"], tags["index"], strict=True)) == {"w": 1, "x": 2, "y": 3, "z": 4}
    sizes = refreshed.sizes
    table = to_tensors(encode(stored.lazy(), SPEC, vocab, sizes).collect(), SPEC)
    assert field_slots(SPEC) == [1, 3]
    assert table.categorical[:, 1:].tolist() == [
        [2, 3, 0],  # x, y, padding
        [0, 0, 0],  # no tags
        [3, 4, 1],  # y, z, w: cut at max_values = 3
        [4, 0, 0],  # z; q was never seen, so dropped rather than sent to row 0
        [0, 0, 0],
    ]


def test_a_multivalued_field_cannot_share_a_name_and_needs_a_slot():
    with pytest.raises(BadInput, match="column 't' is named as both categorical and multivalued"):
        spec_from_dict({"data": {"categorical": ["t"], "multivalued": ["t"]}}, "s.toml")
    with pytest.raises(BadInput, match=r"data\.max_values"):
        spec_from_dict({"data": {"multivalued": ["t"], "max_values": 0}}, "s.toml")


@pytest.mark.slow
def test_the_loop_learns_from_tags_warm_starts_and_exports(ws, tmp_path):
    logs = tmp_path / "logs.csv"
    tagged_logs(days=3, rows=3_000).write_csv(logs)
    spec_file = tmp_path / "tags.toml"
    spec_file.write_text(
        "\n".join(
            [
                "[data]",
                'label = "click"',
                'categorical = ["user"]',
                'multivalued = ["tags"]',
                "max_values = 4",
                'time_column = "ts"',
                "[model]",
                'name = "deepfm"',
                "embedding_dim = 8",
                "hidden_units = [16]",
                "[train]",
                "epochs = 4",
                "batch_size = 128",
                "learning_rate = 0.01",
                "window_days = 1",
                "warm_start = true",
            ]
        )
    )
    runner, root = CliRunner(), str(ws.root)

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*args, "-w", root, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    run("ingest", str(logs), "--spec", str(spec_file))
    assert run("train", "--day", "2024-01-01")["version"] == 1
    second = run("train", "--day", "2024-01-02", "--parent", "1")
    assert second["version"] == 2
    run("score", "-v", "2", "--day", "2024-01-03")
    metrics = run("eval", "-v", "2", "--day", "2024-01-03")["metrics"]
    day3 = ws.scan_logs(["2024-01-03"]).collect()
    good_tags = day3["tags"].list.eval(pl.element().str.slice(1).cast(pl.Int32) < 10).list.sum()
    oracle = auc(day3["label"].to_numpy(), good_tags.to_numpy())  # ranks as the true CTR does
    assert oracle > 0.7
    assert metrics["auc"] > oracle - 0.03  # the tags carry all the signal; users carry none

    from reloop_cli.versions.checkpoint import load_version

    loaded = load_version(ws, 2)
    rows = ws.scan_logs(["2024-01-03"])
    view = vocabulary.for_version(ws, loaded.meta)
    encoded = encode(rows, loaded.spec, view, loaded.meta["field_sizes"]).collect()
    table = to_tensors(encoded, loaded.spec)
    served = ws.scan_scores(2, "2024-01-03").collect()["pctr"].to_numpy()
    for fmt in ("torchscript", "onnx"):
        target = tmp_path / f"model.{fmt}"
        run("export", "-v", "2", "--format", fmt, "--out", str(target))
        features = json.loads(Path(f"{target}.features.json").read_text())
        assert features["index_columns_per_field"] == [1, 4]
        assert features["multivalued_fields"] == ["tags"]
        exported = run_exported(target, fmt, table.categorical, table.dense)
        assert np.abs(exported - served).max() < 1e-5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_learns_from_a_tag_field(name):
    """Clicks depend on how many of tags 1-4 (of 1-11) a row carries; the other field is noise."""
    g = torch.Generator().manual_seed(0)
    n = 2_000
    tags = torch.randint(1, 12, (n, 3), generator=g) * (torch.rand(n, 3, generator=g) < 0.7)
    good = ((tags >= 1) & (tags <= 4)).sum(1).float()
    label = (torch.rand(n, generator=g) < torch.sigmoid(1.5 * good - 1.5)).float()
    categorical = torch.cat([torch.randint(0, 5, (n, 1), generator=g), tags], dim=1)
    torch.manual_seed(0)
    spec = ModelSpec(name=name, embedding_dim=8, hidden_units=(16,), cin_layers=(4,))
    model = build_model(spec, [5, 12], 0, slots=[1, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    dense = torch.zeros(n, 0)
    for _ in range(100):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(categorical, dense), label
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        prob = torch.sigmoid(model(categorical, dense)).numpy()
    assert auc(label.numpy(), prob) > auc(label.numpy(), good.numpy()) - 0.02
