"""Masked inputs for MIM and MAM: random masks, a ViT forward with mask tokens, masked log-mel frames."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

AUDIO_STRIDE = 4  # mel frames per audio token (the encoder's conv subsampling ×4)


def random_mask(valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """[B, N] bool: each valid item masked with probability `ratio`."""
    return (torch.rand(valid.shape, device=valid.device) < ratio) & valid


def vit_masked_tokens(vit: VisionTransformer, pixels: torch.Tensor, patch_mask: torch.Tensor,
                      mask_token: torch.Tensor) -> torch.Tensor:
    """timm ViT `forward_features` with masked patch embeddings replaced by mask_token [D] (SimMIM): [B, N, D]."""
    x = vit.patch_embed(pixels)  # [B, N, D]
    x = torch.where(patch_mask[..., None], mask_token.to(x.dtype), x)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))  # [B, prefix + N, D]
    x = vit.norm(vit.blocks(x))
    return x[:, vit.num_prefix_tokens:]


def mask_frames(features: torch.Tensor, block_mask: torch.Tensor) -> torch.Tensor:
    """Zero (the per-utterance mean) the frames of features [B, T, n_mels] under block_mask [B, T'] (4 frames each)."""
    frames = block_mask.repeat_interleave(AUDIO_STRIDE, dim=1)  # [B, 4T']
    frames = torch.nn.functional.pad(frames, (0, features.shape[1] - frames.shape[1]))  # [B, T]
    return features.masked_fill(frames[..., None], 0.0)


def frame_blocks(features: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """features [B, T, n_mels] → [B, n_blocks, 4 * n_mels]: the 4 frames under each audio token."""
    B, _, n_mels = features.shape
    return features[:, :n_blocks * AUDIO_STRIDE].reshape(B, n_blocks, AUDIO_STRIDE * n_mels)
