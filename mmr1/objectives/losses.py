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
    gather: Optional[Gather] = None,  # x [B, ...] -> world_size tensors [B, ...]; default: all_gather with grad
    valid: Optional[torch.Tensor] = None,  # [B] bool, False = a padding row (every rank pads to one B)
) -> torch.Tensor:
    """Symmetric InfoNCE over the valid rows; with world_size > 1 the negatives are every rank's valid rows.

    Each rank returns its valid rows' summed loss over the count of all ranks' valid rows, times
    world_size: the mean over ranks (DDP's gradient average) is then the mean over every valid
    row, exactly the single-process loss over the concatenated batches, padded or not.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    B = a.shape[0]
    own = torch.ones(B, dtype=torch.bool, device=a.device) if valid is None else valid  # [B]
    if world_size > 1:
        gather = gather or all_gather_with_grad
        all_a, all_b = torch.cat(gather(a)), torch.cat(gather(b))  # [W*B, D]
        all_valid = own.repeat(world_size) if valid is None else torch.cat(gather(valid.to(a.dtype))) > 0  # [W*B]
    else:
        all_a, all_b, all_valid = a, b, own
    targets = (torch.arange(B, device=a.device) + rank * B)[own]  # [N] own valid rows' places among W*B
    blocked = torch.finfo(a.dtype).min  # finite, so a padded column gets no weight and no NaN gradient
    logits_ab = (scale * a[own] @ all_b.T).masked_fill(~all_valid, blocked)  # [N, W*B]
    logits_ba = (scale * b[own] @ all_a.T).masked_fill(~all_valid, blocked)  # [N, W*B]
    summed = F.cross_entropy(logits_ab, targets, reduction="sum") + F.cross_entropy(logits_ba, targets, reduction="sum")
    return summed / 2 / all_valid.sum().clamp(min=1) * world_size


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
