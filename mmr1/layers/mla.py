"""Multi-head Latent Attention (DeepSeek-V2): keys and values come from one low-rank
latent per token, and that latent plus a small shared RoPE key is all the cache holds."""

from __future__ import annotations

import torch
from torch import nn

from mmr1.cache import KVCache
from mmr1.config import CoreConfig
from mmr1.layers.attention import attend
from mmr1.layers.rope import apply_rope


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.nope_dim, self.rope_dim, self.v_dim = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.kv_rank = cfg.kv_lora_rank
        q_dim = cfg.n_heads * (self.nope_dim + self.rope_dim)
        if cfg.q_lora_rank:
            self.q_proj = nn.Sequential(
                nn.Linear(cfg.d_model, cfg.q_lora_rank, bias=False),
                nn.RMSNorm(cfg.q_lora_rank, eps=cfg.norm_eps),
                nn.Linear(cfg.q_lora_rank, q_dim, bias=False),
            )
        else:
            self.q_proj = nn.Linear(cfg.d_model, q_dim, bias=False)
        self.kv_a_proj = nn.Linear(cfg.d_model, self.kv_rank + self.rope_dim, bias=False)
        self.kv_a_norm = nn.RMSNorm(self.kv_rank, eps=cfg.norm_eps)
        self.kv_b_proj = nn.Linear(self.kv_rank, cfg.n_heads * (self.nope_dim + self.v_dim), bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * self.v_dim, cfg.d_model, bias=False)

    def forward(self, x, rope, mask, cache: KVCache | None = None, slot: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_heads
        q = self.q_proj(x).view(B, T, H, self.nope_dim + self.rope_dim).transpose(1, 2)  # [B, H, T, dn+dr]
        q_nope, q_rope = q.split((self.nope_dim, self.rope_dim), dim=-1)
        latent, k_rope = self.kv_a_proj(x).split((self.kv_rank, self.rope_dim), dim=-1)  # [B, T, r], [B, T, dr]
        latent = self.kv_a_norm(latent)
        cos, sin = rope
        q_rope = apply_rope(q_rope, cos, sin)
        k_rope = apply_rope(k_rope[:, None], cos, sin)[:, 0]  # [B, T, dr], shared by all heads
        if cache is not None:
            latent, k_rope = cache.update(slot, "latent", latent), cache.update(slot, "k_rope", k_rope)  # [B, S, .]
        S = latent.shape[1]
        kv = self.kv_b_proj(latent).view(B, S, H, self.nope_dim + self.v_dim).transpose(1, 2)  # [B, H, S, dn+dv]
        k_nope, v = kv.split((self.nope_dim, self.v_dim), dim=-1)
        k = torch.cat((k_nope, k_rope[:, None].expand(B, H, S, self.rope_dim)), dim=-1)  # [B, H, S, dn+dr]
        q = torch.cat((q_nope, q_rope), dim=-1)  # [B, H, T, dn+dr]
        y = attend(q, k, v, mask)  # [B, H, T, dv]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))
