"""LoRA adapters (peft) on the Linear layers of the core or the encoders, injected in place.

    apply_lora(model, r=8, targets=["q_proj", "v_proj"], parts=["core"])
    ... train: only the LoRA matrices require gradients; `model.core` etc. keep their paths ...
    merge_lora_in_place(model)      # W + (alpha / r)·B·A folded in; a plain MultimodalModel again

In place, an adapted Linear `….q_proj` becomes a peft layer holding `….q_proj.base_layer` (the frozen
Linear) and `….q_proj.lora_A.default` / `lora_B.default`; merging puts the plain Linear back.

    train_token_rows(model, [tokenizer.token_id("<think>"), ...])
    ... the embedding (and LM head) rows of those tokens train too; every other row stays bit-identical ...

Tokens a model never saw (the <think>/<answer> tokens `mmr1 import` adds to a pretrained vocabulary) start
as the mean row: adapters on the Linear layers alone cannot make the model emit them, so their rows must
train as well (what peft's `trainable_token_indices` does for transformers models).
"""

from __future__ import annotations

import re
from typing import Sequence, TypedDict

import torch
from torch import nn

class LoraSettings(TypedDict, total=False):
    """`ObjectiveModule(lora=...)`: the keyword arguments of `apply_lora` as plain data (YAML, CLI, checkpoints)."""

    r: int  # rank of the adapters
    targets: list[str]  # last name part of the Linear layers to adapt, e.g. q_proj, v_proj
    parts: list[str]  # where to look: core, vision, audio, text, fusion (default core)
    alpha: float | None  # the update is scaled by alpha / r (default alpha = 2r)
    dropout: float  # dropout on the adapters' input
    modules_to_save: list[str]  # parts that train whole beside the adapters (peft's name), e.g. [fusion]
    trainable_tokens: list[str]  # tokens whose embedding and LM-head rows train too (`train_token_rows`)


def adapter_settings(settings: LoraSettings) -> dict:
    """The keyword arguments of `apply_lora` in `settings` (trainable_tokens need the tokenizer: `train_token_rows`)."""
    return {k: v for k, v in settings.items() if k != "trainable_tokens"}


def apply_lora(model: nn.Module, r: int, targets: Sequence[str], parts: Sequence[str] = ("core",),
               alpha: float | None = None, dropout: float = 0.0, modules_to_save: Sequence[str] = ()) -> nn.Module:
    """Give the Linear layers named `targets` (last name part, e.g. q_proj) inside `parts` LoRA adapters of rank r
    (scale alpha / r, default alpha = 2r), in place, and freeze every other weight but the parts named in
    `modules_to_save` (e.g. the fusion and projector of a multimodal model around a LoRA-tuned core), which
    train whole. Returns `model`."""
    from peft import LoraConfig, inject_adapter_in_model

    from mmr1.model import PARTS

    if r < 1:
        raise ValueError(f"lora: r must be >= 1, got {r}")
    for field, named in (("parts", parts), ("modules_to_save", modules_to_save)):
        unknown = sorted(set(named) - set(PARTS))
        if unknown:
            raise ValueError(f"lora.{field}: unknown part(s) {unknown}; expected some of {sorted(PARTS)}")
    both = sorted(set(parts) & set(modules_to_save))
    if both:
        raise ValueError(f"lora: {both} both get adapters (parts) and train whole (modules_to_save); pick one")
    missing = [part for part in modules_to_save if any(getattr(model, name) is None for name in PARTS[part])]
    if missing:
        raise ValueError(f"lora.modules_to_save: the model has no {missing} part (config has "
                         f"{list(model.config.modalities)})")
    saved = [getattr(model, name) for part in modules_to_save for name in PARTS[part]]
    pattern = rf"^({'|'.join(name for p in parts for name in PARTS[p])})\..*\b({'|'.join(map(re.escape, targets))})$"
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
    for module in saved:
        module.requires_grad_(True)
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


def train_token_rows(model: nn.Module, token_ids: Sequence[int]) -> None:
    """Let the rows `token_ids` of the core's embedding and LM head (one matrix when tied) train beside the
    adapters: every other row gets a zero gradient, so AdamW leaves it bit-identical (`mmr1.optim` puts these
    matrices in the undecayed group). Idempotent for the same ids."""
    core = model.core
    vocab = core.embed_tokens.num_embeddings
    ids = sorted(set(int(i) for i in token_ids))
    if not ids or ids[0] < 0 or ids[-1] >= vocab:
        raise ValueError(f"lora.trainable_tokens: expected ids in [0, {vocab}), got {list(token_ids)}")
    for weight in {id(w): w for w in (core.embed_tokens.weight, core.lm_head.weight)}.values():  # [V, D]
        if getattr(weight, "trainable_rows", None) is not None:
            if weight.trainable_rows != ids:
                raise ValueError(f"lora.trainable_tokens: rows {weight.trainable_rows} already train, not {ids}")
            continue
        keep = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)  # [V, 1]
        keep[ids] = 1
        weight.requires_grad_(True)
        weight.trainable_rows = ids
        weight.register_hook(lambda grad, keep=keep: grad * keep)
