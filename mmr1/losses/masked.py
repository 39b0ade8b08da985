"""Masked modelling of images and sounds: MIM (pixels or visual words) and MAM (log-mel frames)."""

from __future__ import annotations

import torch

from mmr1.losses.language import IGNORE, token_cross_entropy


def masked_regression_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of pred/target [B, N, F] averaged over the masked items mask [B, N]; 0 (with grad) when none are."""
    if not mask.any():
        return pred.sum() * 0.0
    return ((pred.float() - target.float()) ** 2).mean(-1)[mask].mean()


def masked_token_loss(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CE of logits [B, N, K] against codes [B, N] over the masked items mask [B, N] only (discrete MIM)."""
    return token_cross_entropy(logits, codes.masked_fill(~mask, IGNORE))


def normalised_patches(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """pixels [B, 3, H, W] → [B, N, patch*patch*3] patches, each normalised to zero mean, unit variance (MAE)."""
    B, C, H, W = pixels.shape
    x = pixels.reshape(B, C, H // patch, patch, W // patch, patch)
    x = x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // patch) * (W // patch), patch * patch * C)  # [B, N, p*p*C]
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)
    return (x - mean) / (var + 1e-6).sqrt()
