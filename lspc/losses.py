"""Loss primitives shared by the methods implemented here (LSPC's and FISOR's value functions)."""
from __future__ import annotations

import torch


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric L2, mean(|xi - 1[u < 0]| * u^2) of u = target - value: a value below its
    target weighs ``expectile``, so with xi > 0.5 the value tracks an upper expectile of the target."""
    weight = torch.abs(expectile - (diff < 0).to(diff.dtype))
    return (weight * diff.pow(2)).mean()
