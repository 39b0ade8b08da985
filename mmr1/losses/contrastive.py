"""Contrastive (CLIP-style InfoNCE) loss across modalities and ranks, and in-batch retrieval recall."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: the temperature never drops below 1/100

Gather = Callable[[torch.Tensor], list[torch.Tensor]]


def all_gather_with_grad(x: torch.Tensor) -> list[torch.Tensor]:
    """x [B, D] from every rank, gradients flowing back to each (torch.distributed.nn)."""
    from torch.distributed.nn.functional import all_gather

    return list(all_gather(x))


def all_gather_plain(x: torch.Tensor) -> list[torch.Tensor]:
    """x [B] from every rank, no gradient (integer keys)."""
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return parts


def clip_loss(
    a: torch.Tensor,  # [B, D] one modality's embeddings (normalised inside)
    b: torch.Tensor,  # [B, D] the paired modality's embeddings, row i pairs with a[i]
    logit_scale: torch.Tensor,  # scalar, log of the inverse temperature; clamped to ln(100)
    rank: int = 0,
    world_size: int = 1,
    gather: Optional[Gather] = None,  # x [B, ...] -> world_size tensors [B, ...]; default: all_gather with grad
    valid: Optional[torch.Tensor] = None,  # [B] bool, False = a padding row (every rank pads to one B)
    b_negatives: Optional[torch.Tensor] = None,  # [N, D] hard negatives on b's side (NegCLIP), this rank's
    negative_rows: Optional[torch.Tensor] = None,  # [N] long, the row of a that each hard negative belongs to
    b_keys: Optional[torch.Tensor] = None,  # [B] long, equal where b's rows hold the same text (collate.text_keys)
) -> torch.Tensor:
    """Symmetric InfoNCE over the valid rows; with world_size > 1 the negatives are every rank's valid rows.

    Hard negatives (Yuksekgonul et al. 2023, NegCLIP): row i of a also competes against the b_negatives of
    its own row — its caption made wrong in one detail — in the a→b direction only, so a must carry
    the detail to tell its caption from them. The b→a direction is unchanged.

    Repeated texts (b_keys; UniCL, Yang et al. 2022): rows whose b holds the same text (ten digits' captions
    in a batch of 32) are not each other's negatives but positives. Each row's target is spread evenly over
    every valid column with its key, in both directions; with no repeats it is CLIP's one-hot target.

    Each rank returns its valid rows' summed loss over the count of all ranks' valid rows, times
    world_size: the mean over ranks (DDP's gradient average) is then the mean over every valid
    row, exactly the single-process loss over the concatenated batches, padded or not.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    B = a.shape[0]
    own = torch.ones(B, dtype=torch.bool, device=a.device) if valid is None else valid  # [B]
    if world_size > 1:
        spread = gather or all_gather_with_grad
        all_a, all_b = torch.cat(spread(a)), torch.cat(spread(b))  # [W*B, D]
        all_valid = own.repeat(world_size) if valid is None else torch.cat(spread(valid.to(a.dtype))) > 0  # [W*B]
    else:
        all_a, all_b, all_valid = a, b, own
    targets = (torch.arange(B, device=a.device) + rank * B)[own]  # [N] own valid rows' places among W*B
    if b_keys is not None:
        if b_keys.shape != (B,):
            raise ValueError(f"b_keys: expected one key per row, shape ({B},), got {tuple(b_keys.shape)}")
        all_keys = torch.cat((gather or all_gather_plain)(b_keys)) if world_size > 1 else b_keys  # [W*B]
        same = (b_keys[own][:, None] == all_keys[None, :]) & all_valid  # [N, W*B]
        targets = same.to(a.dtype) / same.sum(1, keepdim=True).to(a.dtype)  # [N, W*B] rows sum to 1
    blocked = torch.finfo(a.dtype).min  # finite, so a padded column gets no weight and no NaN gradient
    logits_ab = (scale * a[own] @ all_b.T).masked_fill(~all_valid, blocked)  # [N, W*B]
    logits_ba = (scale * b[own] @ all_a.T).masked_fill(~all_valid, blocked)  # [N, W*B]
    if b_negatives is not None and len(b_negatives):
        if negative_rows is None or negative_rows.shape != b_negatives.shape[:1]:
            raise ValueError("negative_rows: expected one row index per hard negative")
        hard = scale * a[own] @ F.normalize(b_negatives, dim=-1).T  # [N, K]
        mine = negative_rows[None, :] == torch.arange(B, device=a.device)[own][:, None]  # [N, K]
        logits_ab = torch.cat([logits_ab, hard.masked_fill(~mine, blocked)], dim=1)  # [N, W*B + K]
    targets_ab = F.pad(targets, (0, logits_ab.shape[1] - targets.shape[1])) if targets.ndim == 2 else targets
    summed = F.cross_entropy(logits_ab, targets_ab, reduction="sum") + F.cross_entropy(logits_ba, targets, reduction="sum")
    return summed / 2 / all_valid.sum().clamp(min=1) * world_size


def recall_at_1(a: torch.Tensor, b: torch.Tensor, b_keys: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a→b, b→a) share of rows whose nearest partner (cosine) is their own pair, or one holding the same text
    (b_keys [B], as clip_loss); a, b [B, D]."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # [B, B]
    keys = torch.arange(a.shape[0], device=a.device) if b_keys is None else b_keys
    return (keys[sim.argmax(1)] == keys).float().mean(), (keys[sim.argmax(0)] == keys).float().mean()
