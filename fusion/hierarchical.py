"""Hierarchical fusion: one joint gated layer over every unimodal and pairwise-fused token."""

from __future__ import annotations

import torch
from timm.layers import Mlp
from torch import nn

from mmr1.fusion.attention import GatedCrossAttention
from mmr1.fusion.gate import Gate


class HierarchicalFusion(nn.Module):
    """Fused tokens attend to the joint context, then a gated FFN; both gates closed at init (identity)."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cross = GatedCrossAttention(dim, n_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=dropout)
        self.mlp_gate = Gate(dim)

    def forward(self, fused: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """fused [B, P, D] (pairwise outputs) attends to context [B, S, D] masked by [B, S] -> [B, P, D]."""
        hidden = self.cross(fused, context, context_mask)  # [B, P, D]
        return self.mlp_gate(hidden, self.mlp(self.norm(hidden)))  # [B, P, D]
