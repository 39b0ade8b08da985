"""AdamW with linear warmup then cosine decay; no weight decay on norms, biases and embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "reg_token", "logit_scale")


def param_groups(module: nn.Module, weight_decay: float, lr_scales: dict[int, float] | None = None) -> list[dict]:
    """Trainable parameters split into a decayed group (matrices) and an undecayed one (the rest), and again by
    learning-rate scale: `lr_scales` maps id(parameter) to a multiple of the base lr (1 for parameters it
    does not name). Each group carries its "lr_scale"; with no scales there are exactly two groups."""
    lr_scales = lr_scales or {}
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    seen = set()
    for name, p in module.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        skip = (p.ndim < 2 or id(p) in embeddings or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES
                or getattr(p, "trainable_rows", None) is not None)  # decay would move the frozen rows
        groups.setdefault((lr_scales.get(id(p), 1.0), not skip), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr_scale": scale}
            for (scale, decayed), params in groups.items() if params or scale == 1.0]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear 0→1 over warmup_steps, then cosine 1→min_ratio until total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(module: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    warmup_steps: int, total_steps: int, min_lr_ratio: float,
                    lr_scales: dict[int, float] | None = None) -> dict:
    """Lightning's `configure_optimizers` answer: AdamW + a per-step warmup/cosine LambdaLR; each parameter
    group's lr is lr × its scale (`param_groups`)."""
    groups = param_groups(module, weight_decay, lr_scales)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
