"""`mmr1 fit|validate|test|predict`: a LightningCLI over the objectives and datamodules, and `.ckpt` export.

The model's Config is linked into the datamodule (`data.config`), so the inputs always match
the model being trained; checkpoints keep the last (every `last_checkpoint.every_n_train_steps`)
and the best (val/loss) weights, and the best are exported as a checkpoint folder
`<run dir>/export` when fit ends. Checkpoint files are written atomically, and
`--ckpt_path last` after a crash continues with the same data order and RNG states as an
uninterrupted run (`mmr1.callbacks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmr1.callbacks import AtomicCheckpointIO, FiniteWeights, ResumableSampling
from mmr1.checkpoint import require_finite, safe_torch_load
from mmr1.config import Config
from mmr1.datamodules.callbacks import BadRecordReport
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.lora import apply_lora, merge_lora_in_place
from mmr1.model import MultimodalModel
from mmr1.objectives.base import ObjectiveModule

MODEL_PREFIX = "model."  # where ObjectiveModule keeps the MultimodalModel in its state dict


def export_ckpt(ckpt_path: str | Path, out_folder: str | Path) -> Path:
    """Turn a Lightning `.ckpt` written by an ObjectiveModule into a checkpoint folder (weights-only load);
    LoRA adapters are merged, so the folder holds plain weights."""
    checkpoint = safe_torch_load(ckpt_path)
    if "mmr1_config" not in checkpoint:
        raise ValueError(f"{ckpt_path}: no mmr1_config; expected a checkpoint written by an mmr1 objective")
    require_finite(checkpoint.get("state_dict", {}), f"{ckpt_path}: refusing to export")
    model = load_objective_weights(MultimodalModel(Config.from_dict(checkpoint["mmr1_config"])), checkpoint)
    return model.save_pretrained(out_folder, stored_tokenizer(checkpoint.get("mmr1_tokenizer")))


def load_objective_weights(model: MultimodalModel, checkpoint: dict) -> MultimodalModel:
    """Load the model weights of an objective's `.ckpt` into `model`; adapters trained with LoRA
    (`checkpoint["mmr1_lora"]`) are injected, loaded, then merged into plain Linear layers."""
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint.get("state_dict", {}).items()
             if k.startswith(MODEL_PREFIX)}
    lora = checkpoint.get("mmr1_lora")
    if lora is not None:
        apply_lora(model, **lora)
    model.load_state_dict(state)
    return merge_lora_in_place(model) if lora is not None else model


def stored_tokenizer(stored: Optional[dict]) -> Tokenizer:
    """The tokenizer an objective stored in its `.ckpt` as plain data (or the default one)."""
    if stored is None:
        return Tokenizer.default()
    import tokenizers

    return Tokenizer(tokenizers.Tokenizer.from_str(stored["json"]), stored["pad_token"], stored["mask_token"])


class ExportBest(L.Callback):
    """When fit ends, write the best checkpoint's model (by the checkpoint callback's monitor) to
    `<run dir>/export`; with no monitor (`checkpoint.monitor: null`), the weights fit ended with."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: ObjectiveModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "export"
        callback = trainer.checkpoint_callback
        path = callback and callback.monitor and callback.best_model_path
        if path:
            export_ckpt(path, folder)
        else:
            pl_module.export_model().save_pretrained(folder, pl_module.tokenizer or Tokenizer.default())
        print(f"exported {folder}", flush=True)


class TrainingCLI(LightningCLI):
    """LightningCLI with `--model` an ObjectiveModule and `--data` a datamodule taking the model's Config."""

    def __init__(self, args: list[str], run: bool = True):
        super().__init__(
            ObjectiveModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_kwargs={"overwrite": True}, args=args, run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        # Two callbacks: Lightning 2.6 defers every save of a monitoring ModelCheckpoint (last.ckpt too)
        # until its metric exists, so last.ckpt gets its own, unmonitored one in the same folder.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.mode": "min",
                             "checkpoint.filename": "best-{step}"})
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.save_last": True, "last_checkpoint.save_top_k": 0,
                             "last_checkpoint.every_n_train_steps": 50})
        parser.link_arguments("checkpoint.dirpath", "last_checkpoint.dirpath")
        parser.link_arguments("model.config", "data.init_args.config", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Adds a rich progress bar (unless disabled or another is given), LR monitoring, exact resume,
        a stop on non-finite weights, reports of skipped bad records, export of the best weights, and atomic
        checkpoint files."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, RichProgressBar()]
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.loggers:
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        trainer.callbacks.insert(0, ResumableSampling())  # its batch count must be current when checkpoints save
        trainer.callbacks.insert(0, FiniteWeights())  # before any checkpoint callback saves the step
        trainer.callbacks.append(BadRecordReport())
        trainer.callbacks.append(ExportBest())
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def cli_main(args: list[str]) -> None:
    """Run `fit|validate|test|predict` with LightningCLI arguments: ["fit", "--config", "configs/tiny_sft.yaml"]."""
    TrainingCLI(args)
