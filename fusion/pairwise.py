"""Pairwise fusion: each present modality queries each other present one through its own gated block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmr1.fusion.attention import GatedCrossAttention


class PairwiseFusion(nn.Module):
    """One GatedCrossAttention per ordered pair ("image<-audio" = image queries audio), applied in order."""

    def __init__(self, modalities: Sequence[str], dim: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.blocks = nn.ModuleDict({
            f"{q}<-{k}": GatedCrossAttention(dim, n_heads, dropout)
            for q in self.modalities for k in self.modalities if k != q
        })

    def forward(self, tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """tokens[m] [B, L_m, D], masks[m] [B, L_m] -> fused tokens[m] [B, L_m, D] (masks unchanged).

        Keys are always the unimodal tokens, so the result does not depend on which query goes first.
        """
        present = [m for m in self.modalities if m in tokens]
        fused = {}
        for q in present:
            hidden = tokens[q]  # [B, L_q, D]
            for k in present:
                if k != q:
                    hidden = self.blocks[f"{q}<-{k}"](hidden, tokens[k], masks[k])
            fused[q] = hidden
        return fused
