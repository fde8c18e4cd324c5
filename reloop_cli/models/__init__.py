"""The model zoo: every model maps (categorical indices, dense values) to one logit per row."""

from __future__ import annotations

from reloop_cli.models.base import CTRModel
from reloop_cli.models.dcn import DCN, DCNv2
from reloop_cli.models.deepfm import DeepFM
from reloop_cli.models.fm import FM
from reloop_cli.models.lr import LR
from reloop_cli.models.widedeep import WideDeep
from reloop_cli.models.xdeepfm import XDeepFM
from reloop_cli.spec.sections import ModelSpec

MODELS: dict[str, type[CTRModel]] = {
    "lr": LR,
    "fm": FM,
    "deepfm": DeepFM,
    "widedeep": WideDeep,
    "dcn": DCN,
    "dcnv2": DCNv2,
    "xdeepfm": XDeepFM,
}


def build_model(
    spec: ModelSpec, field_sizes: list[int], n_dense: int, slots: list[int] | None = None
) -> CTRModel:
    """A freshly initialised model of the spec's kind for these vocabulary sizes (`slots`: index
    columns per field, from `features.field_slots`; None = one each)."""
    return MODELS[spec.name](field_sizes, n_dense, spec, slots)
