"""Perceiver resampler: a fixed number of learned latents summarise one modality's tokens."""

from __future__ import annotations

import torch
from timm.layers import Mlp
from torch import nn

from mmr1.fusion.attention import MaskedCrossAttention


class PerceiverResampler(nn.Module):
    """n_latents learned queries cross-attend (masked) to the tokens, then an FFN; bounds length to n_latents."""

    def __init__(self, dim: int, n_heads: int, n_latents: int, dropout: float = 0.0, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * 0.02)  # [K, D]
        self.attn = MaskedCrossAttention(dim, n_heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L, D], mask [B, L] -> latents [B, K, D], mask [B, K] (all True iff the sample has any token)."""
        B = tokens.shape[0]
        latents = self.latents.expand(B, -1, -1)  # [B, K, D]
        latents = latents + self.attn(latents, tokens, mask)  # [B, K, D]
        latents = latents + self.mlp(self.norm(latents))  # [B, K, D]
        present = mask.any(dim=1, keepdim=True)  # [B, 1]
        return latents, present.expand(B, self.latents.shape[0])
