"""AdamW with linear warmup then cosine decay; no weight decay on norms, biases and embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "reg_token", "logit_scale")


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group (matrices) and an undecayed one (the rest)."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for name, p in module.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        skip = (p.ndim < 2 or id(p) in embeddings or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
                or getattr(p, "trainable_rows", None) is not None)  # decay would move the frozen rows
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear 0→1 over warmup_steps, then cosine 1→min_ratio until total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(module: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    warmup_steps: int, total_steps: int, min_lr_ratio: float) -> dict:
    """Lightning's `configure_optimizers` answer: AdamW + a per-step warmup/cosine LambdaLR."""
    optimizer = torch.optim.AdamW(param_groups(module, weight_decay), lr=lr, betas=betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
