"""Off-policy evaluation: a candidate version's online CTR, estimated from the live policy's logs.

The live policy showed each request's slots one at a time and logged, for each shown item, the
probability it had of picking it given the slots above (`policies.py`). A candidate policy would
have picked the same item there with its own probability; the logged click at slot s counts for
the candidate with the weight

    W_s = prod_{j <= s} target(a_j | slots above j) / logging(a_j | slots above j),

which makes E_logging[click_s * W_s] = E_target[click_s] (the prefix up to s has that much more
or less chance under the candidate). Estimates, of clicks per request and CTR (= clicks per
request / slots):

- IPS: the mean over requests of sum_s click_s * min(W_s, clip); unbiased without clipping,
  wherever the logging policy gave every pick the candidate might make a chance (epsilon > 0);
- SNIPS (self-normalised): per slot sum(click * W) / sum(W), summed over slots; a little biased,
  far less variable, and the one to read.

Intervals are normal approximations over requests (SNIPS by the delta method). The effective
number of requests (sum W)^2 / sum W^2 per slot says how much of the log the estimate rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reloop_cli.evaluation import statistics

DEFAULT_CLIP = 20.0


@dataclass(frozen=True)
class OffPolicyEstimate:
    """Estimated clicks per request and CTR of a target policy from logged slates."""

    ips_ctr: statistics.Estimate
    snips_ctr: statistics.Estimate
    clip: float
    requests: int
    effective_requests: float  # the smallest per-slot (sum W)^2 / sum W^2

    def to_dict(self) -> dict:
        return {
            "ips_ctr": self.ips_ctr.to_dict(),
            "snips_ctr": self.snips_ctr.to_dict(),
            "clip": self.clip,
            "requests": self.requests,
            "effective_requests": self.effective_requests,
        }


def weights(target: np.ndarray, logging: np.ndarray, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """[requests, slots] prefix weights, each clipped at `clip` (math.inf: none)."""
    ratio = np.divide(
        target, logging, out=np.zeros_like(target, dtype=np.float64), where=logging > 0
    )
    return np.minimum(np.cumprod(ratio, axis=1), clip)


def estimate(
    clicks: np.ndarray,
    logging: np.ndarray,
    target: np.ndarray,
    clip: float = DEFAULT_CLIP,
    confidence: float = statistics.CONFIDENCE,
) -> OffPolicyEstimate:
    """IPS and SNIPS CTR of the target policy; arrays are [requests, slots]."""
    clicks = np.asarray(clicks, dtype=np.float64)
    w = weights(np.asarray(target, np.float64), np.asarray(logging, np.float64), clip)
    requests, slots = clicks.shape
    per_request = (clicks * w).sum(axis=1)  # IPS: each request's weighted clicks
    ips = statistics.mean_estimate(per_request / slots, confidence)
    totals = w.sum(axis=0)
    slot_rates = np.divide((clicks * w).sum(axis=0), totals, out=np.zeros(slots), where=totals > 0)
    mean_weight = totals / requests
    linearised = np.divide(
        (clicks - slot_rates) * w, mean_weight, out=np.zeros_like(w), where=mean_weight > 0
    ).sum(axis=1)  # the delta method's influence of each request on the summed ratio
    se = float(linearised.std(ddof=1) / math.sqrt(requests) / slots) if requests > 1 else math.nan
    snips = statistics.normal_estimate(float(slot_rates.sum() / slots), se, confidence, (0.0, 1.0))
    squares = (w**2).sum(axis=0)
    effective = np.divide(totals**2, squares, out=np.zeros(slots), where=squares > 0)
    return OffPolicyEstimate(ips, snips, clip, requests, float(effective.min()))
