"""The zero-initialised gated residual that makes an untrained fusion layer the identity."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class Gate(nn.Module):
    """H' = (1 - g)·H + g·Proj(U), with g = tanh(alpha)·σ(W[H ; U]) and alpha = 0 at init."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(2 * dim, dim)  # W
        self.proj = nn.Linear(dim, dim)  # Proj
        self.alpha = nn.Parameter(torch.zeros(dim))  # per-channel; tanh(0) = 0 closes the gate

    def forward(
        self, hidden: torch.Tensor, update: torch.Tensor, present: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Mix `update` into `hidden` (both [B, L, D]); samples with `present` [B] False keep `hidden`."""
        g = torch.tanh(self.alpha) * torch.sigmoid(self.score(torch.cat([hidden, update], dim=-1)))  # [B, L, D]
        if present is not None:
            g = g * present[:, None, None].to(g.dtype)  # [B, L, D]
        return (1 - g) * hidden + g * self.proj(update)  # [B, L, D]
