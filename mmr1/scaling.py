"""Scaling knobs applied to a built model: activation checkpointing, torch.compile and FSDP2 sharding.

All three act per block and keep parameter names, so `.ckpt` files, `export_ckpt` and
`save_pretrained` see the same state dict with or without them.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.utils._python_dispatch import TorchDispatchMode

from mmr1.model import MultimodalModel


def core_blocks(model: MultimodalModel) -> list[nn.Module]:
    """The reasoning core's decoder blocks and its refinement block."""
    core = model.core
    return [*core.layers, *([core.refine] if core.refine is not None else [])]


def encoder_blocks(model: MultimodalModel) -> list[nn.Module]:
    """The transformer blocks of the vision (timm), text (transformers) and audio (Conformer) encoders."""
    blocks: list[nn.Module] = []
    if model.vision is not None:
        blocks += list(model.vision.model.blocks)
    if model.text_encoder is not None:
        blocks += list(model.text_encoder.model.encoder.layer)
    if model.audio is not None:
        blocks += list(model.audio.conformer.conformer_layers)
    return blocks


def checkpoint_units(model: MultimodalModel) -> list[nn.Module]:
    """The modules whose activations are recomputed in backward: one per block.

    The audio encoder runs each Conformer layer through `_conformer_layer`, which calls the
    layer's parts rather than the layer, so its hookable units are the two FFNs and attention.
    """
    units = core_blocks(model)
    if model.vision is not None:
        units += list(model.vision.model.blocks)
    if model.text_encoder is not None:
        units += list(model.text_encoder.model.encoder.layer)
    if model.audio is not None:
        units += [part for layer in model.audio.conformer.conformer_layers
                  for part in (layer.ffn1, layer.self_attn, layer.ffn2)]
    return units


def checkpoint_activations(model: MultimodalModel) -> None:
    """Keep only each block's inputs for backward and recompute the rest (torch's composable checkpoint)."""
    for unit in checkpoint_units(model):
        checkpoint(unit)


def compile_core(model: MultimodalModel) -> None:
    """`torch.compile` each core block in place (one graph reused by every block; names unchanged)."""
    for block in core_blocks(model):
        block.compile()


def shard(modules: list[nn.Module], root: nn.Module, mesh: DeviceMesh) -> None:
    """FSDP2: shard every block, then the root (the remaining parameters), across `mesh`."""
    for module in modules:
        fully_shard(module, mesh=mesh)
    fully_shard(root, mesh=mesh)


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated while active, on any device (no allocator stats needed).

    Every aten op passes through `__torch_dispatch__`: an output that the op's schema does not mark
    as an alias is a new storage and is counted until the last tensor viewing it is garbage
    collected. Tensors that existed before (parameters) are not counted, so for a training step
    this is the activation + gradient peak, including what activation checkpointing keeps.
    """

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}  # storage address -> live tensors viewing it
        self.sizes: dict[int, int] = {}  # storage address -> bytes
        self.watched: set[int] = set()  # id() of the tensors holding a counted storage
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for t, ret in zip(outs, func._schema.returns):
            if isinstance(t, torch.Tensor):
                self._watch(t, new=ret.alias_info is None)
        return out

    def _watch(self, t: torch.Tensor, new: bool) -> None:
        key = t.untyped_storage().data_ptr()
        if id(t) in self.watched or key == 0 or not (new or key in self.refs):
            return
        if key not in self.refs:
            self.refs[key], self.sizes[key] = 0, t.untyped_storage().nbytes()
            self.live += self.sizes[key]
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        self.watched.add(id(t))
        weakref.finalize(t, self._release, key, id(t))

    def _release(self, key: int, tensor_id: int) -> None:
        self.watched.discard(tensor_id)
        self.refs[key] -= 1
        if not self.refs[key]:
            self.live -= self.sizes.pop(key)
            del self.refs[key]
