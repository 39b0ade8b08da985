"""Rotary position embeddings (RoPE), laid out as in Hugging Face Llama (rotate-half)."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Turns integer positions into the (cos, sin) tables that `apply_rope` uses."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))  # [dim/2]
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq  # [B, T, dim/2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [B, T, dim]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, d] rotated by cos/sin [B, T, d]."""
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, d]
    return x * cos + rotate_half(x) * sin
