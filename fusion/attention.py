"""Masked multi-head cross-attention, plain and gated; the building block of every fusion stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmr1.fusion.gate import Gate


class MaskedCrossAttention(nn.Module):
    """Pre-norm multi-head attention from queries to keys; a sample with no key present reads exact zeros."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm_query = nn.LayerNorm(dim)
        self.norm_key = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] attends to context [B, S, D] where context_mask [B, S] is True -> [B, L, D]."""
        q = rearrange(self.query(self.norm_query(x)), "b l (h d) -> b h l d", h=self.n_heads)  # [B, H, L, Dh]
        k, v = rearrange(
            self.key_value(self.norm_key(context)), "b s (two h d) -> two b h s d", two=2, h=self.n_heads
        )  # [B, H, S, Dh] each
        present = context_mask.any(dim=1)  # [B]
        # A fully masked row is NaN on some SDPA backends: let absent samples see every key, then zero them.
        attn_mask = (context_mask | ~present[:, None])[:, None, None, :]  # [B, 1, 1, S]
        read = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, L, Dh]
        read = self.out(rearrange(read, "b h l d -> b l (h d)"))  # [B, L, D]
        return torch.where(present[:, None, None], read, torch.zeros_like(read))


class GatedCrossAttention(nn.Module):
    """x attends to a context and mixes the result in through a zero-initialised Gate (identity at init)."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = MaskedCrossAttention(dim, n_heads, dropout)
        self.gate = Gate(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], context [B, S, D], context_mask [B, S] -> [B, L, D]; unchanged where no key is present."""
        read = self.attn(x, context, context_mask)  # [B, L, D]
        return self.gate(x, read, context_mask.any(dim=1))
