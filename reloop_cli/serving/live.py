"""A release ready to serve: its model traced for the forward pass, its request encoder, and
with `serving.adapter` on, the adapter that corrects it (and only it). The live version and an
experiment's candidate are each one of these."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reloop_cli.adapt.keys import ProbabilityAndKey
from reloop_cli.serving.adapting import ServedAdapter
from reloop_cli.serving.encoder import RequestEncoder
from reloop_cli.serving.release import Release, load_release
from reloop_cli.spec.pipeline import Spec

log = logging.getLogger("reloop")


@dataclass
class Live:
    """One loaded release, its encoder and its forward pass: what a request is scored with;
    with `serving.adapter` on, the adapter that corrects this release (and only this one)."""

    release: Release
    encoder: RequestEncoder
    forward: torch.jit.ScriptModule  # (categorical, dense) -> (pCTR, the adapter's key)
    adapter: ServedAdapter | None = None

    @property
    def version(self) -> int:
        return self.release.version

    def predict(self, categorical: torch.Tensor, dense: torch.Tensor) -> np.ndarray:
        return self.predict_with_keys(categorical, dense)[0]

    def predict_with_keys(
        self, categorical: torch.Tensor, dense: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            pctr, keys = self.forward(categorical, dense)
        return pctr.numpy().astype(np.float64), keys.numpy()


def load_live(serving_root: Path, name: str, spec: Spec | None = None) -> Live:
    """A release ready to serve. Its network is traced here, from the weights it was read
    with (no pickled program is loaded): the same arithmetic as the eager model, with less
    Python per call (100 rows: 142 us traced, 259 us eager; docs/guides/serving.md). With
    `spec.serving.adapter` set, an empty adapter for this release comes with it."""
    release = load_release(serving_root, name)
    encoder = RequestEncoder(
        release.spec, release.vocab, release.meta["field_sizes"], release.forms
    )
    example = encoder.encode([{}, {}])
    kind = spec.adapt.memory_key if spec is not None and spec.serving.adapter else "hidden"
    stats = release.key_stats if kind == "standardized" else None
    if kind == "standardized" and stats is None:
        # Published before releases kept them: serve on, with the unscaled key, and say so.
        log.warning(
            'release %s has no key statistics for adapt.memory_key = "standardized": its '
            'memory hashes the "preactivation" key; `reloop promote N` publishes it again '
            "with them",
            name,
        )
        kind = "preactivation"
    wrapped = ProbabilityAndKey(release.model.requires_grad_(False).eval(), kind, stats)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trace fixes this release's shapes, as it should
        forward = torch.jit.trace(wrapped, (example.categorical, example.dense))
        key_dim = int(forward(example.categorical, example.dense)[1].shape[1])
    adapter = None
    if spec is not None and spec.serving.adapter:
        seed = spec.serving.seed if spec.serving.seed is not None else 0
        adapter = ServedAdapter(spec, release.model, key_dim, seed, stats)
    return Live(release, encoder, forward, adapter)
