"""The objectives' maths as plain functions: contrastive, next-token and masked-modelling losses."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

IGNORE = -100  # label of positions outside the loss
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: the temperature never drops below 1/100

Gather = Callable[[torch.Tensor], list[torch.Tensor]]


def all_gather_with_grad(x: torch.Tensor) -> list[torch.Tensor]:
    """x [B, D] from every rank, gradients flowing back to each (torch.distributed.nn)."""
    from torch.distributed.nn.functional import all_gather

    return list(all_gather(x))


def clip_loss(
    a: torch.Tensor,  # [B, D] one modality's embeddings (normalised inside)
    b: torch.Tensor,  # [B, D] the paired modality's embeddings, row i pairs with a[i]
    logit_scale: torch.Tensor,  # scalar, log of the inverse temperature; clamped to ln(100)
    rank: int = 0,
    world_size: int = 1,
    gather: Optional[Gather] = None,  # x [B, D] -> world_size tensors [B, D]; default: all_gather with grad
) -> torch.Tensor:
    """Symmetric InfoNCE; with world_size > 1 the negatives are the other ranks' rows too."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    if world_size > 1:
        gather = gather or all_gather_with_grad
        all_a, all_b = torch.cat(gather(a)), torch.cat(gather(b))  # [W*B, D]
    else:
        all_a, all_b = a, b
    targets = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]  # [B]
    logits_ab = scale * a @ all_b.T  # [B, W*B]
    logits_ba = scale * b @ all_a.T  # [B, W*B]
    return (F.cross_entropy(logits_ab, targets) + F.cross_entropy(logits_ba, targets)) / 2


def recall_at_1(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a→b, b→a) share of rows whose nearest partner (cosine) is their own pair; a, b [B, D]."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # [B, B]
    target = torch.arange(a.shape[0], device=a.device)
    return (sim.argmax(1) == target).float().mean(), (sim.argmax(0) == target).float().mean()


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE of logits [..., V] against labels [...] where labels != -100; 0 (with grad) when none are."""
    valid = labels != IGNORE
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), labels[valid])


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE: logits [B, T, V] at t predict labels [B, T] at t + 1 (labels unshifted, -100 ignored)."""
    return token_cross_entropy(logits[:, :-1], labels[:, 1:])


def mlm_loss(logits: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """Masked-language-model CE: logits [B, L, V] at each masked position against text_labels [B, L]."""
    return token_cross_entropy(logits, text_labels)


def masked_regression_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of pred/target [B, N, F] averaged over the masked items mask [B, N]; 0 (with grad) when none are."""
    if not mask.any():
        return pred.sum() * 0.0
    return ((pred.float() - target.float()) ** 2).mean(-1)[mask].mean()


def normalised_patches(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """pixels [B, 3, H, W] → [B, N, patch*patch*3] patches, each normalised to zero mean, unit variance (MAE)."""
    B, C, H, W = pixels.shape
    x = pixels.reshape(B, C, H // patch, patch, W // patch, patch)
    x = x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // patch) * (W // patch), patch * patch * C)  # [B, N, p*p*C]
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True)
    return (x - mean) / (var + 1e-6).sqrt()
