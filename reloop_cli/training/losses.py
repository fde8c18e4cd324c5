"""The three training losses, as the paper writes them (Cai et al., SIGIR 2022, eq. 3-5).

`y_last` is the parent version's predicted probability for the same row (NaN where it has none);
such rows get plain BCE in every loss. `y_last` is data, never a path for gradients.

    bce:    BCE(ŷ, y)
    kd:     alpha * BCE(ŷ, ỹ_last) + (1 - alpha) * BCE(ŷ, y)        (alpha = 1: pure distillation)
    reloop: alpha * L_sc + (1 - alpha) * BCE(ŷ, y),
            L_sc = y * max(ỹ_last - ŷ, 0) + (1 - y) * max(ŷ - ỹ_last, 0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, label)


def self_correction(prob: torch.Tensor, label: torch.Tensor, y_last: torch.Tensor) -> torch.Tensor:
    """Per-row L_sc: how far ŷ falls on the wrong side of the parent's prediction.

    For labels in {0, 1}, y * max(ỹ_last - ŷ, 0) + (1 - y) * max(ŷ - ỹ_last, 0) is one hinge,
    max((2y - 1) * (ỹ_last - ŷ), 0): three kernels instead of eight, which matters because a
    batch's loss is a chain of tiny kernels whose fixed cost would otherwise show in the step."""
    return torch.relu((2 * label - 1) * (y_last - prob))


def kd_loss(
    logits: torch.Tensor, label: torch.Tensor, y_last: torch.Tensor, alpha: float
) -> torch.Tensor:
    """BCE is linear in its target, so alpha * BCE(ŷ, ỹ_last) + (1 - alpha) * BCE(ŷ, y) is
    BCE(ŷ, alpha * ỹ_last + (1 - alpha) * y): one BCE over a mixed target."""
    mixed = alpha * y_last + (1 - alpha) * label
    target = torch.where(torch.isnan(y_last), label, mixed).detach()
    return F.binary_cross_entropy_with_logits(logits, target)


def reloop_loss(
    logits: torch.Tensor, label: torch.Tensor, y_last: torch.Tensor, alpha: float
) -> torch.Tensor:
    has_last = (~torch.isnan(y_last)).to(logits.dtype)
    weight = alpha * has_last  # alpha where ỹ_last exists, else 0: plain BCE
    correction = self_correction(torch.sigmoid(logits), label, torch.nan_to_num(y_last).detach())
    plain = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    return (plain + weight * (correction - plain)).mean()


def training_loss(
    name: str, logits: torch.Tensor, label: torch.Tensor, y_last: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The loss a spec names, for one batch."""
    if name == "bce":
        return bce_loss(logits, label)
    if name == "kd":
        return kd_loss(logits, label, y_last, alpha)
    if name == "reloop":
        return reloop_loss(logits, label, y_last, alpha)
    raise ValueError(f"unknown loss {name!r}")
