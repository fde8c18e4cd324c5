"""`reloop export`: a version as a TorchScript (or ONNX) file for serving outside reloop.

The exported program takes (categorical int64 [B, Fc], dense float32 [B, Fd]) and returns the
click probability [B]; in ONNX, a model without dense fields has no `dense` input. A sidecar
`<FILE>.features.json` holds what turns raw values into those inputs: field order, the index
columns each field takes (a multivalued field takes `max_values`: its tags' indices, 0 = none),
the vocabulary rows the version knows, and the numeric transform.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from torch import nn

from reloop_cli.errors import BadInput
from reloop_cli.features import vocabulary
from reloop_cli.spec.layout import categorical_fields, dense_fields, field_slots
from reloop_cli.store.workspace import Workspace
from reloop_cli.versions.checkpoint import load_version

FORMATS = ("torchscript", "onnx")


class Probability(nn.Module):
    """The version's network with the sigmoid applied: what a server returns as pCTR."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, categorical: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(categorical, dense))


@dataclass
class ExportResult:
    version: int
    format: str
    path: str
    features: str


def _example_inputs(
    field_sizes: list[int], slots: list[int], n_dense: int
) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = zip(field_sizes, slots, strict=True)
    columns = [torch.arange(4) % max(size, 1) for size, k in pairs for _ in range(k)]
    categorical = torch.stack(columns, dim=1) if columns else torch.zeros(4, 0)
    return categorical.reshape(4, sum(slots)).long(), torch.zeros(4, n_dense)


def export_version(ws: Workspace, version: int, fmt: str, out: Path) -> ExportResult:
    if fmt not in FORMATS:
        raise BadInput(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
    loaded = load_version(ws, version)
    wrapper = Probability(loaded.model).eval()
    meta = loaded.meta
    example = _example_inputs(meta["field_sizes"], field_slots(loaded.spec), meta["n_dense"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}.part")
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            # The trace fixes Python-level branches (a model with or without dense fields) to
            # this version's shapes, which is what an export is for: torch's warning says so.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(wrapper, example)
        traced.save(str(tmp))
    else:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise BadInput("format onnx needs the onnx extra: pip install 'reloop[onnx]'") from None
        torch.onnx.export(
            wrapper,
            example,
            str(tmp),
            input_names=["categorical", "dense"],
            output_names=["pctr"],
            dynamic_axes={"categorical": {0: "rows"}, "dense": {0: "rows"}, "pctr": {0: "rows"}},
            dynamo=False,
        )
    tmp.replace(out)
    features = out.with_name(out.name + ".features.json")
    ws.write_json(_feature_map(ws, loaded), features)
    return ExportResult(version, fmt, str(out), str(features))


def _feature_map(ws: Workspace, loaded) -> dict:
    spec, sizes = loaded.spec, loaded.meta["field_sizes"]
    view = vocabulary.for_version(ws, loaded.meta)
    fields, hashed = {}, {}
    for name, size in zip(categorical_fields(spec), sizes, strict=True):
        buckets = spec.vocabulary.policy(name, spec.train.min_count).hash_buckets
        if buckets:
            hashed[name] = {"buckets": buckets}
            continue
        rows = view.filter((pl.col("field") == name) & (pl.col("index") < size))
        fields[name] = dict(zip(rows["value"].to_list(), rows["index"].to_list(), strict=True))
    return {
        "categorical_fields": categorical_fields(spec),
        "index_columns_per_field": field_slots(spec),
        "multivalued_fields": list(spec.data.multivalued),
        "dense_fields": dense_fields(spec),
        "out_of_vocabulary_index": 0,
        "numeric_transform": spec.data.numeric_transform,
        "vocabulary": fields,
        # A hashed field keeps no vocabulary: index = 1 + FNV-1a-64(UTF-8 bytes of the value,
        # "<null>" for a missing one) mod buckets.
        "hashed_fields": hashed,
        "hash": "fnv1a64",
    }
