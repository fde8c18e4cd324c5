"""An adapted arm in the closed loop: the adapter decides what is shown, hour by hour, from the
labels that have arrived, and the version's own pCTR is what is logged for training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from reloop_cli.errors import BadInput
from reloop_cli.evaluation import policies
from reloop_cli.evaluation.policies import Policy
from reloop_cli.experiments.adapted_serving import serve_adapted
from reloop_cli.experiments.closed_loop import (
    CHAIN,
    Arm,
    ClosedLoopConfig,
    draw_requests,
    run_closed_loop,
    version_scores,
)
from reloop_cli.experiments.synth import SynthConfig, World
from reloop_cli.spec.pipeline import load_spec
from reloop_cli.store.registry import Registry
from reloop_cli.store.workspace import Workspace
from tests.helpers import REPO

GREEDY = Policy("epsilon", epsilon=0.0, slots=3)  # no exploration draws: arms comparable row by row
DRIFTING = ClosedLoopConfig(
    days=2,
    requests=600,
    candidates=8,
    policy=GREEDY,
    intraday_trend=2.0,
    intraday_base_shift=1.0,
)


def small_spec():
    return (
        load_spec(REPO / "pipelines" / "sample.toml")
        .override("model", embedding_dim=8, hidden_units=(16,))
        .override("train", epochs=2, batch_size=256, learning_rate=0.01)
    )


@pytest.fixture(scope="module")
def live_arm(tmp_path_factory):
    """A closed-loop arm with a live version, and day 1's requests of its world."""
    spec = small_spec()
    ws = Workspace(tmp_path_factory.mktemp("loop") / "ws")
    run_closed_loop(ws, spec, ["bce"], replace(DRIFTING, days=1))
    arm = Arm("bce", ws.closed_loop_arm(0, "bce"))
    with Registry(arm.ws) as registry:
        arm.live = registry.live(CHAIN)
    world = World(DRIFTING.world_config())
    draw_requests(world, 0, "2024-01-01", DRIFTING)
    world.advance(1)
    return spec, arm, world, draw_requests(world, 1, "2024-01-02", DRIFTING)


def adapted(live_arm, name: str, spec=None):
    base_spec, arm, world, requests = live_arm
    return serve_adapted(
        arm.ws,
        arm.live,
        world,
        requests,
        spec or base_spec,
        name,
        GREEDY,
        np.random.default_rng(0),
        label_delay=3_600.0,
        seed=0,
    )


@pytest.mark.slow
def test_an_adapter_that_changes_nothing_serves_what_its_version_serves(live_arm):
    spec, arm, world, requests = live_arm
    scores = version_scores(arm, world, requests)
    plain, _ = policies.serve(GREEDY, scores, np.random.default_rng(0))
    still = adapted(live_arm, "reloop2", spec.override("adapt", memory_weight=0.0))
    assert np.array_equal(still.shown, plain)
    # what is logged for training is the version's own pCTR of what was shown (ỹ_last)
    assert np.allclose(still.pctr, np.take_along_axis(scores, plain, axis=1), atol=1e-6)


@pytest.mark.slow
def test_an_adapter_changes_what_is_shown_once_labels_have_arrived(live_arm):
    spec, _, _, requests = live_arm
    plain = adapted(live_arm, "reloop2", spec.override("adapt", memory_weight=0.0))
    corrected = adapted(live_arm, "field_bias")
    early = requests.hour < 1  # nothing has been labelled before 01:00 (labels take an hour)
    assert np.array_equal(corrected.shown[early], plain.shown[early])
    assert not np.array_equal(corrected.shown[~early], plain.shown[~early])
    assert np.array_equal(corrected.pctr[early], corrected.adapted[early])
    assert not np.allclose(corrected.pctr, corrected.adapted)


def test_the_truth_drifts_within_the_day_only_when_asked():
    still, drifting = World(SynthConfig(seed=3)), World(SynthConfig(seed=3, intraday_trend=2.0))
    user, item = np.array([[1]]), np.array([[len(still.item_birth) - 1]])  # the newest item
    args = (np.array([[23]]), np.array([[0]]), np.array([[1]]))
    born = int(still.item_birth[-1])
    assert still.click_probability(user, item, *args, day=born) == still.click_probability(
        user, item, *args
    )
    assert drifting.click_probability(user, item, *args, day=born) > drifting.click_probability(
        user, item, *args
    )


def test_an_unknown_adapter_arm_names_it(tmp_path):
    with pytest.raises(BadInput, match="bce\\+magic"):
        run_closed_loop(Workspace(tmp_path / "ws"), small_spec(), ["bce+magic"], DRIFTING)
