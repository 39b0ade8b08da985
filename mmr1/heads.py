"""Heads on the core's final states (the LM head lives in the core, tied to the embedding)."""

from __future__ import annotations

import torch
from torch import nn

from mmr1.encoders.output import masked_mean

__all__ = ["ClassificationHead", "masked_mean"]


class ClassificationHead(nn.Module):
    """Pooled state [B, D] -> class logits [B, n_classes]."""

    def __init__(self, d_model: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.RMSNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, n_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.norm(pooled)))
