"""Serving in the simulation: rank a request's candidates, explore, and log the propensity.

A policy fills a request's N slots one at a time from the candidates not shown yet:

- `epsilon` (epsilon-greedy): the best-scored remaining candidate with probability 1 - epsilon,
  a uniformly random remaining one with probability epsilon (epsilon = 0: greedy; 1: random);
- `softmax`: remaining candidate b with probability exp(logit_b / T) / sum over the remaining
  (a Plackett-Luce ranking at temperature T).

The probability with which each shown item was picked, given the slots above it, is its logged
propensity: at every slot the probabilities over the remaining candidates sum to 1, and a
target policy's probability of the same pick (`logged_probabilities`) is what off-policy
evaluation weighs the logged click by (`offpolicy.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reloop_cli.errors import BadInput

KINDS = ("epsilon", "softmax")
SCORE_EPS = 1e-6  # pCTRs are clipped to [eps, 1 - eps] before their logit


@dataclass(frozen=True)
class Policy:
    """How a version's scores become a shown ranking."""

    kind: str = "epsilon"
    epsilon: float = 0.05
    temperature: float = 0.1
    slots: int = 5

    def validate(self, candidates: int) -> Policy:
        if self.kind not in KINDS:
            raise BadInput(f"policy: '{self.kind}' is not one of {', '.join(KINDS)}")
        if not 0 <= self.epsilon <= 1:
            raise BadInput(f"epsilon: {self.epsilon} is not in [0, 1]")
        if self.temperature <= 0:
            raise BadInput(f"temperature: {self.temperature} must be > 0")
        if not 1 <= self.slots <= candidates:
            raise BadInput(f"slots: {self.slots} must be in 1..{candidates} (the candidates)")
        return self


def random_policy(slots: int) -> Policy:
    """Every remaining candidate equally likely at every slot (epsilon-greedy with epsilon 1)."""
    return Policy("epsilon", epsilon=1.0, slots=slots)


def slot_probabilities(policy: Policy, scores: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """[requests, candidates] probabilities of picking each candidate for the next slot; zero
    for candidates already shown; each row sums to 1."""
    count = remaining.sum(axis=1, keepdims=True)
    if policy.kind == "softmax":
        clipped = np.clip(scores, SCORE_EPS, 1 - SCORE_EPS)
        logits = np.log(clipped) - np.log1p(-clipped)
        logits = np.where(remaining, logits / policy.temperature, -np.inf)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        return weights / weights.sum(axis=1, keepdims=True)
    masked = np.where(remaining, scores, -np.inf)
    best = masked.argmax(axis=1)  # ties: the first candidate
    probabilities = np.where(remaining, policy.epsilon / count, 0.0)
    probabilities[np.arange(len(scores)), best] += 1 - policy.epsilon
    return probabilities


def serve(
    policy: Policy, scores: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the slots: ([requests, slots] candidate positions shown, their propensities)."""
    requests, candidates = scores.shape
    remaining = np.ones((requests, candidates), dtype=bool)
    shown = np.zeros((requests, policy.slots), dtype=np.int64)
    propensity = np.zeros((requests, policy.slots))
    rows = np.arange(requests)
    for slot in range(policy.slots):
        probabilities = slot_probabilities(policy, scores, remaining)
        cumulative = probabilities.cumsum(axis=1)
        draws = rng.random(requests)[:, None] * cumulative[:, -1:]
        pick = np.minimum((cumulative <= draws).sum(axis=1), candidates - 1)
        pick = np.where(remaining[rows, pick], pick, probabilities.argmax(axis=1))  # float edge
        shown[:, slot] = pick
        propensity[:, slot] = probabilities[rows, pick]
        remaining[rows, pick] = False
    return shown, propensity


def logged_probabilities(policy: Policy, scores: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """[requests, slots]: the probability `policy` (on these scores) gives each logged pick,
    given the logged picks above it."""
    requests, candidates = scores.shape
    remaining = np.ones((requests, candidates), dtype=bool)
    out = np.zeros(shown.shape)
    rows = np.arange(requests)
    for slot in range(shown.shape[1]):
        probabilities = slot_probabilities(policy, scores, remaining)
        out[:, slot] = probabilities[rows, shown[:, slot]]
        remaining[rows, shown[:, slot]] = False
    return out


def top(scores: np.ndarray, slots: int) -> np.ndarray:
    """The best-scored `slots` candidates, best first (the oracle's ranking on true CTRs)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :slots]
