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
    """Per-row L_sc: how far ŷ falls on the wrong side of the parent's prediction."""
    return label * torch.relu(y_last - prob) + (1 - label) * torch.relu(prob - y_last)


def kd_loss(
    logits: torch.Tensor, label: torch.Tensor, y_last: torch.Tensor, alpha: float
) -> torch.Tensor:
    has_last = ~torch.isnan(y_last)
    teacher = torch.where(has_last, y_last, label).detach()
    distill = F.binary_cross_entropy_with_logits(logits, teacher, reduction="none")
    plain = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    return torch.where(has_last, alpha * distill + (1 - alpha) * plain, plain).mean()


def reloop_loss(
    logits: torch.Tensor, label: torch.Tensor, y_last: torch.Tensor, alpha: float
) -> torch.Tensor:
    has_last = ~torch.isnan(y_last)
    teacher = torch.nan_to_num(y_last).detach()
    correction = self_correction(torch.sigmoid(logits), label, teacher)
    plain = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    return torch.where(has_last, alpha * correction + (1 - alpha) * plain, plain).mean()


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
