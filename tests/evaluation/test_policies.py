"""The serving policy logs true propensities, and IPS on them is unbiased."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from reloop_cli.errors import BadInput
from reloop_cli.evaluation import offpolicy
from reloop_cli.evaluation import policies as serving
from reloop_cli.evaluation.metrics import gini

POLICIES = [
    serving.Policy("epsilon", epsilon=0.1, slots=3),
    serving.Policy("epsilon", epsilon=0.0, slots=3),
    serving.Policy("softmax", temperature=0.5, slots=3),
]


@pytest.mark.parametrize("policy", POLICIES, ids=["epsilon", "greedy", "softmax"])
def test_every_slot_is_a_distribution_over_the_remaining_candidates(policy):
    rng = np.random.default_rng(0)
    scores = rng.random((200, 6))
    remaining = np.ones((200, 6), dtype=bool)
    for _ in range(policy.slots):
        probabilities = serving.slot_probabilities(policy, scores, remaining)
        assert np.allclose(probabilities.sum(axis=1), 1.0)
        assert (probabilities[~remaining] == 0).all()
        remaining[np.arange(200), probabilities.argmax(axis=1)] = False


@pytest.mark.parametrize("policy", POLICIES, ids=["epsilon", "greedy", "softmax"])
def test_shown_items_are_distinct_candidates_with_the_policys_own_probability(policy):
    rng = np.random.default_rng(1)
    scores = rng.random((500, 6))
    shown, propensity = serving.serve(policy, scores, np.random.default_rng(2))
    assert shown.shape == (500, 3) and ((shown >= 0) & (shown < 6)).all()
    assert all(len(set(row)) == 3 for row in shown)
    assert ((propensity > 0) & (propensity <= 1)).all()
    assert np.allclose(propensity, serving.logged_probabilities(policy, scores, shown))
    if policy.epsilon == 0 and policy.kind == "epsilon":  # greedy: the true ranking, surely
        assert (shown == serving.top(scores, 3)).all() and (propensity == 1).all()


def test_picks_follow_the_logged_probabilities():
    policy = serving.Policy("epsilon", epsilon=0.3, slots=1)
    scores = np.tile([0.9, 0.1, 0.2, 0.3], (40_000, 1))
    shown, _ = serving.serve(policy, scores, np.random.default_rng(3))
    share = np.bincount(shown[:, 0], minlength=4) / 40_000
    assert share == pytest.approx([0.7 + 0.075, 0.075, 0.075, 0.075], abs=0.01)


def test_bad_policies_are_refused_by_name():
    with pytest.raises(BadInput, match=r"epsilon: 1\.5 is not in"):
        serving.Policy(epsilon=1.5).validate(10)
    with pytest.raises(BadInput, match=r"slots: 12 must be in 1\.\.10"):
        serving.Policy(slots=12).validate(10)


def _exact_value(policy, scores, truth):
    """Expected clicks per request of `policy`, summed over every ranking it could show."""
    total = np.zeros(len(scores))
    rows = np.arange(len(scores))[:, None]
    for ranking in itertools.permutations(range(scores.shape[1]), policy.slots):
        shown = np.tile(ranking, (len(scores), 1))
        probability = serving.logged_probabilities(policy, scores, shown).prod(axis=1)
        total += probability * truth[rows, shown].sum(axis=1)
    return float(total.mean())


def test_ips_is_unbiased_on_a_case_with_a_known_answer():
    """Four candidates, two slots; the truth of the target policy by enumerating every ranking."""
    rng = np.random.default_rng(4)
    requests = 400
    truth_at = rng.uniform(0.02, 0.4, (requests, 4))  # click probability per candidate (slot-free)
    logging = serving.Policy("epsilon", epsilon=0.5, slots=2)
    target = serving.Policy("softmax", temperature=0.3, slots=2)
    logging_scores, target_scores = rng.random((requests, 4)), truth_at
    exact = _exact_value(target, target_scores, truth_at) / 2  # CTR = clicks per request / slots
    estimates = []
    for seed in range(300):
        draw = np.random.default_rng(100 + seed)
        shown, propensity = serving.serve(logging, logging_scores, draw)
        probability = truth_at[np.arange(requests)[:, None], shown]
        clicks = draw.random(shown.shape) < probability
        weights = serving.logged_probabilities(target, target_scores, shown)
        estimates.append(
            offpolicy.estimate(clicks, propensity, weights, clip=math.inf).ips_ctr.value
        )
    mean, error = np.mean(estimates), np.std(estimates, ddof=1) / math.sqrt(len(estimates))
    assert abs(mean - exact) < 3 * error  # unbiased: within three standard errors of the mean


def test_on_policy_weights_are_one_and_estimates_are_the_observed_ctr():
    rng = np.random.default_rng(5)
    clicks = rng.random((1_000, 3)) < 0.2
    propensity = rng.uniform(0.1, 1, (1_000, 3))
    estimate = offpolicy.estimate(clicks, propensity, propensity)
    assert estimate.ips_ctr.value == pytest.approx(clicks.mean())
    assert estimate.snips_ctr.value == pytest.approx(clicks.mean())
    assert estimate.effective_requests == pytest.approx(1_000)


def test_gini_of_exposure():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 12])) == pytest.approx(0.75)  # (n - 1) / n when one has all
