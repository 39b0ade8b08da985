"""What every encoder returns, and what fusion consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of tokens [B, L, D] over mask [B, L]; a row with no tokens gives zeros."""
    weights = mask.to(tokens.dtype)[..., None]  # [B, L, 1]
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # [B, D]


@dataclass
class EncoderOutput:
    """Tokens of one modality for a batch.

    A row of `mask` that is all False means the modality is absent for that sample
    (e.g. an image-only record in a batch that also has audio).
    """

    tokens: torch.Tensor  # [B, L, D]
    mask: torch.Tensor  # [B, L] bool, True = a real token
    pooled: torch.Tensor  # [B, D], for contrastive objectives

    def __post_init__(self) -> None:
        B, L, D = self.tokens.shape
        if self.mask.shape != (B, L) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask: expected bool [{B}, {L}], got {self.mask.dtype} {list(self.mask.shape)}")
        if self.pooled.shape != (B, D):
            raise ValueError(f"pooled: expected [{B}, {D}], got {list(self.pooled.shape)}")

    @property
    def present(self) -> torch.Tensor:
        """[B] bool: the samples that have this modality."""
        return self.mask.any(dim=1)
