"""Smaller, faster models: int8 dynamic quantization, magnitude pruning, channel pruning.

    model, report = quantize_int8(model)           # every nn.Linear → int8 weights, int8 matmuls on CPU
    model, report = prune_magnitude(model, 0.5)    # the 50% smallest Linear weights → 0, permanently
    model, report = prune_channels(model, 0.25)    # 25% of every SwiGLU's hidden channels removed (zeroed)

These change models in memory; `mmr1.checkpoint.export` writes them as folders (int8 weights on
disk, compression.json) and `mmr1.checkpoint.load_model` re-applies `apply_saved` on load. The
tied LM head/embedding is never pruned (pruning it would prune the embedding).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

QUANTIZE_MODES = ("int8",)


@dataclass
class Report:
    size_mb: float  # the state dict serialised with torch.save, in MB (10^6 bytes)
    sparsity: float  # fraction of zeros among the prunable Linear weights (0 for a quantized model)


def size_mb(model: nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def prunable(model: nn.Module) -> list[nn.Linear]:
    """Every nn.Linear except those sharing their weight with an embedding (tied LM heads)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [m for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in embeddings]


def sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in prunable(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def quantize_int8(model: nn.Module) -> tuple[nn.Module, Report]:
    """A copy with every nn.Linear dynamically quantized to int8 (torch.ao; CPU inference)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        quantized = torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)
    return quantized, Report(size_mb(quantized), 0.0)


def prune_magnitude(model: nn.Module, amount: float) -> tuple[nn.Module, Report]:
    """Zero the `amount` fraction of smallest-magnitude weights over all prunable Linears (global, in place)."""
    _check_amount(amount)
    linears = prunable(model)
    prune.global_unstructured([(m, "weight") for m in linears], pruning_method=prune.L1Unstructured, amount=amount)
    for m in linears:
        prune.remove(m, "weight")
    return model, Report(size_mb(model), sparsity(model))


def prune_channels(model: nn.Module, amount: float) -> tuple[nn.Module, Report]:
    """Remove the `amount` fraction of hidden channels with the smallest L2 norm from every SwiGLU
    (ln_structured on up_proj rows; the same channels of gate_proj and down_proj are zeroed too)."""
    from mmr1.layers.mlp import SwiGLU

    _check_amount(amount)
    for mlp in (m for m in model.modules() if isinstance(m, SwiGLU)):
        prune.ln_structured(mlp.up_proj, "weight", amount, n=2, dim=0)
        keep = mlp.up_proj.weight_mask[:, :1]  # [hidden, 1]
        prune.custom_from_mask(mlp.gate_proj, "weight", keep.expand_as(mlp.gate_proj.weight))
        prune.custom_from_mask(mlp.down_proj, "weight", keep.T.expand_as(mlp.down_proj.weight))
        for linear in (mlp.up_proj, mlp.gate_proj, mlp.down_proj):
            prune.remove(linear, "weight")
    return model, Report(size_mb(model), sparsity(model))


def apply_saved(model: nn.Module, spec: dict) -> nn.Module:
    """Re-apply what compression.json says (pruning is already in the weights)."""
    mode = spec.get("quantize")
    if mode is None:
        return model
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"compression.json: quantize is {mode!r}; expected one of {QUANTIZE_MODES}")
    return quantize_int8(model)[0]


def _check_amount(amount: float) -> None:
    if not 0 <= amount < 1:
        raise ValueError(f"prune: the fraction to remove must be in [0, 1), got {amount}")
