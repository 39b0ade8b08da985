"""What every objective shares: the model (preset or checkpoint), freezing, AdamW + warmup/cosine,
MoE bias balancing after each optimizer step, and a loss guard that names the step and term."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from mmr1.config import Config
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.lora import LoraSettings, adapter_settings, apply_lora, merge_lora_in_place, train_token_rows
from mmr1.model import PARTS, MultimodalModel
from mmr1.optim import build_optimizer
from mmr1.scaling import checkpoint_activations, compile_core, fill_absent_media, shard, shard_units

STEPS = ("training_step", "validation_step", "test_step", "predict_step")  # what Lightning calls, not forward


def build_model(preset: str, overrides: Optional[dict], init_from: Optional[str]) -> MultimodalModel:
    """A fresh model from a preset (+ nested overrides), or the weights of a checkpoint folder."""
    if init_from is None:
        return MultimodalModel(Config.from_name(preset, **(overrides or {})))
    if overrides:
        raise ValueError("overrides: give either init_from (the folder fixes the architecture) or overrides, not both")
    try:
        return MultimodalModel.from_pretrained(init_from).train()
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"init_from: cannot load {init_from}: {e}") from e


def check_same_vocabulary(init_from: Optional[str], tokenizer: Tokenizer) -> None:
    """The data must be tokenized with the vocabulary the `init_from` weights were trained on (when it holds one)."""
    if init_from is None or not (Path(init_from) / "tokenizer.json").is_file():
        return
    if Tokenizer.from_pretrained(init_from).backend.get_vocab() != tokenizer.backend.get_vocab():
        raise ValueError(f"data tokenizer: its vocabulary differs from the one in init_from={init_from}; "
                         f"pass --data.init_args.tokenizer {init_from}")


def part_modules(model: MultimodalModel, part: str, option: str) -> list[nn.Module]:
    """The modules of a named part (vision, text, audio, fusion, core); a bad name fails naming `option`."""
    if part not in PARTS:
        raise ValueError(f"{option}: unknown part {part!r}; expected some of {list(PARTS)}")
    modules = [getattr(model, name) for name in PARTS[part]]
    if any(module is None for module in modules):
        raise ValueError(f"{option}: the model has no {part} part (config has {list(model.config.modalities)})")
    return modules


def freeze_parts(model: MultimodalModel, parts: Sequence[str]) -> None:
    """Stop gradients to the named parts (vision, text, audio, fusion, core)."""
    for part in parts:
        for module in part_modules(model, part, "freeze"):
            module.requires_grad_(False)


def hold_frozen_statistics(model: MultimodalModel, parts: Sequence[str]) -> None:
    """Frozen parts keep their running statistics: their BatchNorm layers (the Conformer's convolution module)
    normalise with the stored statistics and stop updating them, as timm's frozen BatchNorm does, so a frozen
    encoder computes the same function after training as before. The rest of the part keeps its mode
    (SpecAugment and dropout still act in training)."""
    for part in parts:
        for module in part_modules(model, part, "freeze"):
            for layer in module.modules():
                if isinstance(layer, nn.modules.batchnorm._NormBase) and layer.track_running_stats:
                    layer.eval()


def part_lr_scales(model: MultimodalModel, scales: dict[str, float], frozen: Sequence[str]) -> dict[int, float]:
    """id(parameter) -> lr multiple for the parts named in `scales` (vision, text, audio, fusion, core)."""
    by_id = {}
    for part, scale in scales.items():
        modules = part_modules(model, part, "lr_scale")
        if part in frozen:
            raise ValueError(f"lr_scale: {part!r} is also in freeze; a part either trains or not")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"lr_scale: {part}: expected a positive finite multiple of lr, got {scale!r}")
        for module in modules:
            by_id.update({id(p): float(scale) for p in module.parameters()})
    return by_id


def deterministic(model: MultimodalModel) -> None:
    """Eval mode for RL updates (as TRL disables dropout): no dropout, no SpecAugment, BatchNorm on its
    running statistics, so the policy computes the function that sampled its responses and that its
    frozen reference computes; gradients flow as usual. MoE layers stay in training mode, so the load of
    the trained tokens still feeds bias balancing."""
    model.eval()
    for moe in model.core.moe_layers():
        moe.train()


def reference_copy(model: MultimodalModel) -> MultimodalModel:
    """The frozen reference of an RL objective: a copy of the policy in eval mode with no gradients, which
    an unchanged policy matches bit for bit. Kept out of the parameters (`FrozenModels`), it never changes."""
    from mmr1.objectives.frozen import frozen

    return frozen(copy.deepcopy(model))


def check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    """Raise FloatingPointError naming the step and the first non-finite loss term."""
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise FloatingPointError(f"step {step}: loss term {name!r} is {value.item()} (not finite)")


def batch_size(batch: dict) -> int:
    return next(v.shape[0] for v in batch.values() if torch.is_tensor(v))


class ObjectiveModule(L.LightningModule):
    """Subclasses implement `losses(batch) -> {"loss": total, term: value, ...}`."""

    deterministic_policy = False  # True for RL objectives: each training step runs `deterministic`

    def __init__(
        self,
        preset: str = "tiny",
        overrides: Optional[dict] = None,
        init_from: Optional[str] = None,
        freeze: Sequence[str] = (),
        lr: float = 3e-4,
        lr_scale: Optional[dict[str, float]] = None,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.1,
        activation_checkpointing: bool = False,
        compile: bool = False,
        fsdp: bool = False,
        lora: Optional[LoraSettings] = None,
    ):
        """
        Args:
            preset / overrides: `Config.from_name(preset, **overrides)`, e.g. {"core": {"n_layers": 2}}.
            init_from: a checkpoint folder to start from instead (its config fixes the shapes).
            freeze: parts that get no gradient and keep their BatchNorm statistics: vision, text, audio,
                fusion, core.
            lr / weight_decay / betas: AdamW (no decay on norms, biases, embeddings).
            lr_scale: some parts' learning rates as multiples of lr, e.g. {"vision": 0.1} (LLaVA's lower
                vision-tower lr): the part learns, more slowly than the rest. Parts as in `freeze`.
            warmup_steps / min_lr_ratio: linear warmup, then cosine down to lr * min_lr_ratio at the last step.
            activation_checkpointing: recompute each core and encoder block's activations in backward.
            compile: `torch.compile` each core block (needs a C++ compiler on CPU; first steps are slow).
            fsdp: shard each block and the rest across the data-parallel mesh (FSDP2); needs
                `trainer.strategy: lightning.pytorch.strategies.ModelParallelStrategy`.
            lora: train LoRA adapters only (`mmr1.lora.apply_lora` keyword arguments), e.g.
                {"r": 8, "targets": ["q_proj", "v_proj"], "parts": ["core"]}; merged on export. With
                "trainable_tokens": ["<think>", ...] those tokens' embedding/LM-head rows train too; with
                "modules_to_save": ["fusion", "audio"] those parts train whole beside the adapters.
        """
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(preset, overrides, init_from)
        freeze_parts(self.model, freeze)
        if lora is not None:
            both = sorted(set(freeze) & set(lora.get("modules_to_save", ())))
            if both:
                raise ValueError(f"freeze: {both} also in lora.modules_to_save; a part either trains or not")
            apply_lora(self.model, **adapter_settings(lora))
        part_lr_scales(self.model, lr_scale or {}, freeze)  # bad parts fail here; the optimizer maps them again
        self.tokenizer = None  # set from the datamodule in `setup`; exported with the weights
        self._init_from = init_from
        self._scaled = False  # `configure_model` runs once per fit/validate/test; the knobs apply once

    @property
    def config(self) -> Config:
        return self.model.config

    @property
    def init_from(self) -> Optional[str]:
        """The model folder this module started from; None when built from a preset."""
        return self._init_from

    def export_model(self) -> MultimodalModel:
        """The model to save: a merged copy when training LoRA adapters, else the model itself."""
        if self.hparams.lora is None:
            return self.model
        return merge_lora_in_place(copy.deepcopy(self.model))

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---- steps --------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Optional[torch.Tensor]:
        if not batch:  # every record of the batch was a skipped bad record: no update
            return None
        terms = self.losses(batch)
        check_finite(terms, self.global_step)
        self._log_terms(terms, "train", batch)
        return terms["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch:
            self._log_terms(self.losses(batch), "val", batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        if batch:
            self._log_terms(self.losses(batch), "test", batch)

    def _log_terms(self, terms: dict[str, torch.Tensor], stage: str, batch: dict) -> None:
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value.detach(), prog_bar=name == "loss", batch_size=batch_size(batch),
                     sync_dist=stage != "train")

    # ---- scaling knobs -------------------------------------------------------------------
    def configure_model(self) -> None:
        """Apply the knobs in the order they compose: checkpoint, then shard, then compile."""
        if self._scaled:
            return
        self._scaled = True
        h = self.hparams
        if h.activation_checkpointing:
            checkpoint_activations(self.model)
        if h.fsdp:
            if self.device_mesh is None:
                raise ValueError("fsdp: needs trainer.strategy ModelParallelStrategy (which provides the device mesh)")
            shard(shard_units(self.model), self, self.device_mesh["data_parallel"], STEPS)
        if h.compile:
            compile_core(self.model)

    @property
    def shares_prompt(self) -> bool:
        """Whether RL scoring reads each prompt once for its G completions (`rollout.completion_forward`): not
        when blocks recompute their forward in backward (activation checkpointing), which a KV cache cannot
        survive, nor under FSDP, where it is not tested."""
        return not (self.hparams.activation_checkpointing or self.hparams.fsdp)

    def _fill_absent_media(self, batch: dict) -> None:
        """Under FSDP2, blank inputs for the modalities only other ranks' batches have (see `fill_absent_media`)."""
        if self.hparams.fsdp and dist.is_available() and dist.is_initialized():
            fill_absent_media(batch, self.model, batch_size(batch))

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self._fill_absent_media(batch)
        if self.deterministic_policy:  # set every step: Lightning puts the model back in training mode
            deterministic(self.model)
        hold_frozen_statistics(self.model, self.hparams.freeze)

    def on_validation_batch_start(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._fill_absent_media(batch)

    def on_test_batch_start(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._fill_absent_media(batch)

    # ---- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        h = self.hparams
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        total = int(total) if math.isfinite(total) else 1
        scales = part_lr_scales(self.model, h.lr_scale or {}, h.freeze)  # now: FSDP and LoRA replace parameters
        return build_optimizer(self, h.lr, h.weight_decay, tuple(h.betas), h.warmup_steps, total, h.min_lr_ratio,
                               scales)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.balance_experts()

    def manual_optimizer_step(self, max_grad_norm: float) -> None:
        """For manually optimised objectives (GRPO, PPO): clip, step, schedule, balance the experts."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        self.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        self.balance_experts()

    @torch.no_grad()
    def balance_experts(self) -> None:
        """Log each MoE layer's busiest expert share, then nudge its routing bias (loads summed over ranks)."""
        rate = self.config.core.bias_update_rate
        for i, moe in enumerate(self.model.core.moe_layers()):
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(moe.expert_load)
            self.log(f"moe/max_load_{i}", moe.load_fraction().max(), on_step=True, on_epoch=False)
            moe.update_routing_bias(rate)

    # ---- the tokenizer travels with the weights ------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        collator = getattr(datamodule, "collator", None)
        tokenizer = collator.tokenizer if collator is not None else getattr(datamodule, "tokenizer", None)
        if tokenizer is not None:
            self.tokenizer = tokenizer
            if len(self.tokenizer) > self.config.core.vocab_size:
                raise ValueError(f"core.vocab_size: {self.config.core.vocab_size} is smaller than the tokenizer's "
                                 f"{len(self.tokenizer)} tokens")
            check_same_vocabulary(self._init_from, tokenizer)
        tokens = (self.hparams.lora or {}).get("trainable_tokens")
        if tokens:
            if self.tokenizer is None:
                raise ValueError("lora.trainable_tokens: needs the tokenizer, and the datamodule gives none")
            unknown = [t for t in tokens if self.tokenizer.backend.token_to_id(t) is None]
            if unknown:
                raise ValueError(f"lora.trainable_tokens: {unknown} are not in the tokenizer's vocabulary")
            train_token_rows(self.model, [self.tokenizer.token_id(t) for t in tokens])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the config (and the LoRA settings, the tokenizer) as plain data, so `export_ckpt` needs no pickle."""
        checkpoint["mmr1_config"] = self.config.to_dict()
        if self.hparams.lora is not None:
            checkpoint["mmr1_lora"] = dict(self.hparams.lora)
        if self.tokenizer is not None:
            checkpoint["mmr1_tokenizer"] = self.tokenizer.to_dict()

