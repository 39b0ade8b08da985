"""LoRA adapters (peft) on the Linear layers of the core or the encoders, injected in place.

    apply_lora(model, r=8, targets=["q_proj", "v_proj"], parts=["core"])
    ... train: only the LoRA matrices require gradients; `model.core` etc. keep their paths ...
    merge_lora_in_place(model)      # W + (alpha / r)·B·A folded in; a plain MultimodalModel again

In place, an adapted Linear `….q_proj` becomes a peft layer holding `….q_proj.base_layer` (the frozen
Linear) and `….q_proj.lora_A.default` / `lora_B.default`; merging puts the plain Linear back.
"""

from __future__ import annotations

import re
from typing import Sequence, TypedDict

from torch import nn

PARTS = {"core": "core", "vision": "vision", "audio": "audio", "text": "text_encoder", "fusion": "fusion"}


class LoraSettings(TypedDict, total=False):
    """`ObjectiveModule(lora=...)`: the keyword arguments of `apply_lora` as plain data (YAML, CLI, checkpoints)."""

    r: int  # rank of the adapters
    targets: list[str]  # last name part of the Linear layers to adapt, e.g. q_proj, v_proj
    parts: list[str]  # where to look: core, vision, audio, text, fusion (default core)
    alpha: float | None  # the update is scaled by alpha / r (default alpha = 2r)
    dropout: float  # dropout on the adapters' input


def apply_lora(model: nn.Module, r: int, targets: Sequence[str], parts: Sequence[str] = ("core",),
               alpha: float | None = None, dropout: float = 0.0) -> nn.Module:
    """Give the Linear layers named `targets` (last name part, e.g. q_proj) inside `parts` LoRA adapters of rank r
    (scale alpha / r, default alpha = 2r), in place, and freeze every other weight. Returns `model`."""
    from peft import LoraConfig, inject_adapter_in_model

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
    inject_adapter_in_model(config, model)
    del model.peft_config  # peft's bookkeeping; the settings live with the objective, not the model
    model.requires_grad_(False)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def merge_lora_in_place(model: nn.Module) -> nn.Module:
    """Fold every adapter into its Linear (W + (alpha / r)·B·A) and put the plain Linear back. Returns `model`."""
    from peft.tuners.lora import LoraLayer

    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in adapted:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA matrices."""
    return [p for name, p in model.named_parameters() if "lora_" in name and p.requires_grad]
