"""Grouped-query self-attention with RoPE, and the plain cross-attention the IRM uses.

Projection names (q_proj, k_proj, v_proj, o_proj) match Llama/Qwen2 checkpoints.
`mask` is a bool [B, 1, Tq, Tk] (True = may attend) or None, meaning causal
without padding, the Tq queries being the last Tq of the Tk positions (for Tq == 1
that is "attend to everything cached").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmr1.cache import KVCache
from mmr1.config import CoreConfig
from mmr1.layers.rope import apply_rope


def attend(q, k, v, mask: torch.Tensor | None, enable_gqa: bool = False) -> torch.Tensor:
    """SDPA over q [B, H, Tq, d], k/v [B, Hkv, Tk, d] -> [B, H, Tq, dv]."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    if mask is None and 1 < Tq < Tk:  # new tokens on top of a cache: causal aligned bottom-right
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)  # [Tq, Tk]
    is_causal = mask is None and Tq > 1
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=enable_gqa)


class Attention(nn.Module):
    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x, rope, mask, cache: KVCache | None = None, slot: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, d]
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, d]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, d]
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(slot, "k", k), cache.update(slot, "v", v)  # [B, Hkv, S, d]
        y = attend(q, k, v, mask, enable_gqa=self.n_kv_heads != self.n_heads)  # [B, H, T, d]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class CrossAttention(nn.Module):
    """Queries from x attend to `memory` (no RoPE); rows with no valid memory give zeros."""

    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, P, _ = memory.shape
        k = self.k_proj(memory).view(B, P, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, P, d]
        v = self.v_proj(memory).view(B, P, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, P, d]
        return k, v

    def forward(self, x, memory_kv, memory_mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        k, v = memory_kv
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, d]
        has_memory = memory_mask.any(dim=1)  # [B]
        # A row with no memory attends to a dummy key; its output is zeroed below.
        mask = (memory_mask | ~has_memory[:, None])[:, None, None, :]  # [B, 1, 1, P]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, d]
        y = self.o_proj(y.transpose(1, 2).reshape(B, T, -1))
        return y * has_memory[:, None, None].to(y.dtype)
