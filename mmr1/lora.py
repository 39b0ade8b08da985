"""LoRA adapters (peft) on the Linear layers of the core or the encoders.

    model = apply_lora(model, r=8, targets=["q_proj", "v_proj"], parts=["core"])
    ... train: only the LoRA matrices require gradients ...
    model = merge_lora(model)       # W + (alpha / r)·B·A folded in; a plain MultimodalModel again
"""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

PARTS = {"core": "core", "vision": "vision", "audio": "audio", "text": "text_encoder", "fusion": "fusion"}


def apply_lora(model: nn.Module, r: int, targets: Sequence[str], parts: Sequence[str] = ("core",),
               alpha: float | None = None, dropout: float = 0.0) -> nn.Module:
    """A peft model whose Linear layers named `targets` (last name part, e.g. q_proj) inside `parts` carry
    LoRA adapters of rank r (scale alpha / r, default alpha = 2r); every other weight is frozen."""
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise ValueError(f"lora: r must be >= 1, got {r}")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"lora: unknown part(s) {unknown}; expected some of {sorted(PARTS)}")
    pattern = rf"^({'|'.join(PARTS[p] for p in parts)})\..*\b({'|'.join(map(re.escape, targets))})$"
    matched = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and re.match(pattern, name)]
    if not matched:
        raise ValueError(f"lora: no Linear layer named {list(targets)} inside {list(parts)}")
    config = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, lora_dropout=dropout,
                        target_modules=pattern)
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the weights and return the plain base model."""
    return model.merge_and_unload()


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA matrices."""
    return [p for name, p in model.named_parameters() if "lora_" in name and p.requires_grad]
