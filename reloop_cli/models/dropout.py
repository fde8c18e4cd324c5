"""Dropout whose random mask is cheap to draw on the CPU.

torch's CPU dropout draws one float per element from a serial Mersenne Twister. For DeepFM's
1024 x 400 hidden layer that mask costs 5.8 ms on the project's 2-core machine, twice the
layer's own matmul (2.7 ms), which made dropout the largest single cost of a training step
(docs/BENCHMARKS.md). NumPy's PCG64 draws the same mask as 16-bit integers in 0.5 ms.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

LEVELS = 1 << 16  # the mask is drawn as uint16: p is rounded to a multiple of 1/65536


class Dropout(nn.Module):
    """Inverted dropout (scale kept units by 1 / (1 - p)), as `nn.Dropout`, with its CPU mask
    drawn by NumPy. Each call seeds a fresh generator from torch's global one, so
    `torch.manual_seed` still makes training reproducible. Tensors on a GPU use torch's own
    dropout, whose Philox generator is fast there."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} not in [0, 1)")
        self.p = p
        self.threshold = round(p * LEVELS)  # a unit is dropped when its draw is below this
        self.scale = LEVELS / (LEVELS - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        seed = int(torch.randint(0, 2**62, (1,)))
        draws = np.random.default_rng(seed).integers(0, LEVELS, x.shape, dtype=np.uint16)
        mask = torch.from_numpy(draws >= self.threshold).to(x.dtype).mul_(self.scale)
        return x * mask  # one multiply forward and backward, the scale folded into the mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
