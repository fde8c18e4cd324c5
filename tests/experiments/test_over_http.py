"""The loop of real processes, on small sizes: `reloop serve` on loopback serves a synth world's
requests (at random before the first version), `reloop run --from-server` retrains nightly on
what it logged, the server picks up the promotion, and the online CTR agrees with the
in-process closed loop of the same world and policy within its interval."""

from __future__ import annotations

import signal

import pytest

from reloop_cli.evaluation.policies import Policy
from reloop_cli.experiments.closed_loop import ClosedLoopConfig
from reloop_cli.experiments.over_http import OverHttpConfig, run_over_http
from reloop_cli.store.workspace import Workspace

pytestmark = pytest.mark.slow  # a server and nightly runs as processes

REQUESTS, SLOTS = 150, 3


def test_the_loop_over_http_serves_retrains_swaps_and_agrees_in_process(tmp_path, sample_spec):
    # A tiny day can be judged: the holdout is drawn by the hash of the server's impression ids,
    # new at every boot, so its clicks vary from run to run (about 27 here; 5 are needed).
    spec = sample_spec.override("gate", min_clicks=5, min_auc=0.0, holdout_fraction=0.3)
    closed = ClosedLoopConfig(
        days=1, requests=REQUESTS, candidates=8, policy=Policy("epsilon", 0.05, slots=SLOTS)
    )
    root = Workspace(tmp_path / "ws")
    result = run_over_http(root, spec, OverHttpConfig(closed, "reloop", timeout_seconds=120))

    first, second = result.online
    assert first["versions"] == [None]  # cold start: served at random
    run = result.runs[0]
    assert run["outcome"] == "promoted" and run["live_after"] == 1
    assert run["join"]["impressions"] == REQUESTS * SLOTS  # every shown impression came back
    assert run["join"]["clicked"] == first["clicks"]  # and every click posted, on its own one
    assert run["join"]["unknown_clicks"] == 0 and run["join"]["held_back"] == 0
    assert second["versions"] == [1]  # the server swapped to the promoted version, alone
    assert result.server_exit in (0, -signal.SIGTERM)

    served = root.over_http_world(0)
    assert served.days() == ["2024-01-01"]  # the last day's logs wait for a next night
    trained = served.scan_logs(served.days()).collect()
    assert trained.height == REQUESTS * SLOTS
    assert trained["served_pctr"].null_count() == trained.height  # nothing scored day 0
    assert trained["label"].sum() == first["clicks"]
    assert trained["propensity"].min() > 0 and trained["request_id"].n_unique() == REQUESTS

    # The same requests and click draws, paired by request; but the two loops train different
    # versions (their holdout and validation slices hash the server's impression ids, new at
    # every boot), and with 150 requests a version's own noise is several CTR points
    # (docs/RESULTS.md section 6), so only a gross disagreement fails here; agreement itself is
    # measured on 6,000 requests a day (docs/guides/serving.md).
    pooled = result.pooled()
    assert abs(pooled.value) < 0.08, result.differences
    assert result.to_dict()["pooled"]["verdict"]
