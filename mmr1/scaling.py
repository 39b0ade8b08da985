"""Scaling knobs applied to a built model: activation checkpointing, torch.compile and FSDP2 sharding.

All three act per block and keep parameter names, so `.ckpt` files, `export_ckpt` and
`save_pretrained` see the same state dict with or without them.
"""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
from torch.utils._python_dispatch import TorchDispatchMode

from mmr1.model import MultimodalModel


def core_blocks(model: MultimodalModel) -> list[nn.Module]:
    """The reasoning core's decoder blocks and its refinement block."""
    core = model.core
    return [*core.layers, *([core.refine] if core.refine is not None else [])]


def encoder_blocks(model: MultimodalModel) -> list[nn.Module]:
    """The units of the vision (timm), text (transformers) and audio (Conformer) encoders that are called per block.

    Hooks (checkpointing's, FSDP's) fire only on a module that is called. The audio encoder runs each
    Conformer layer through `_conformer_layer`, which calls the layer's parts rather than the layer,
    so its units are the two FFNs and attention; the rest of each layer belongs to the root.
    """
    blocks: list[nn.Module] = []
    if model.vision is not None:
        blocks += list(model.vision.model.blocks)
    if model.text_encoder is not None:
        blocks += list(model.text_encoder.model.encoder.layer)
    if model.audio is not None:
        blocks += [part for layer in model.audio.conformer.conformer_layers
                   for part in (layer.ffn1, layer.self_attn, layer.ffn2)]
    return blocks


def shard_units(model: MultimodalModel) -> list[nn.Module]:
    """The blocks FSDP2 shards one by one. The refinement block stays with the root: the core computes
    its cross-attention memory (`memory_kv`) outside its forward, where FSDP would not have gathered it."""
    return [*model.core.layers, *encoder_blocks(model)]


def checkpoint_activations(model: MultimodalModel) -> None:
    """Keep only each block's inputs for backward and recompute the rest (torch's composable checkpoint)."""
    for unit in core_blocks(model) + encoder_blocks(model):
        checkpoint(unit)


def compile_core(model: MultimodalModel) -> None:
    """`torch.compile` each core block in place (one graph reused by every block; names unchanged)."""
    for block in core_blocks(model):
        block.compile()


def shard(modules: list[nn.Module], root: nn.Module, mesh: DeviceMesh, methods: tuple[str, ...] = ()) -> None:
    """FSDP2: shard every block, then the root (the remaining parameters), across `mesh`.

    FSDP gathers the root's parameters when its `forward` runs; `methods` are the other root methods
    that must do the same (a LightningModule's steps, which Lightning calls instead of `forward`).
    """
    for module in modules:
        fully_shard(module, mesh=mesh)
    fully_shard(root, mesh=mesh)
    for name in methods:
        register_fsdp_forward_method(root, name)


def blank_media(model: MultimodalModel, modality: str, rows: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`modality`'s inputs with all `rows` marked absent: the encoder runs, the outputs are as without them."""
    cfg = model.config
    if modality == "image":
        size = cfg.vision.image_size
        return {"pixel_values": torch.zeros(rows, 3, size, size, device=device),  # [B, 3, H, W]
                "image_mask": torch.zeros(rows, dtype=torch.bool, device=device)}  # [B]
    if modality == "audio":
        return {"audio_values": torch.zeros(rows, cfg.audio.sample_rate // 10, device=device),  # [B, S]: 100 ms
                "audio_lengths": torch.zeros(rows, dtype=torch.long, device=device)}  # [B]
    return {"text_ids": torch.zeros(rows, 1, dtype=torch.long, device=device),  # [B, 1]
            "text_mask": torch.zeros(rows, 1, dtype=torch.bool, device=device)}  # [B, 1]


def fill_absent_media(batch: dict, model: MultimodalModel, rows: int) -> dict:
    """Add blank inputs (in place) for each modality that this rank's batch lacks but another rank's has.

    Under FSDP2 every rank must run the same sharded blocks (each all-gathers its weights) and
    reduce-scatter gradients for the same parameters, so an encoder used anywhere runs everywhere.
    """
    first_keys = {"image": "pixel_values", "audio": "audio_values", "text": "text_ids"}
    modalities = list(model._encoders())
    device = next(v.device for v in batch.values() if torch.is_tensor(v))
    present = torch.tensor([first_keys[m] in batch for m in modalities], dtype=torch.int32, device=device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    for modality, anywhere in zip(modalities, present.tolist()):
        if anywhere and first_keys[modality] not in batch:
            batch.update(blank_media(model, modality, rows, device))
    return batch


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
