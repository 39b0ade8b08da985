"""`mmr1 fit|validate|test|predict`: a LightningCLI over the objectives and datamodules, and `.ckpt` export.

The model's Config is linked into the datamodule (`data.config`), so the inputs always match
the model being trained; checkpoints keep the last and the best (val/loss) weights, and the
best are exported as a checkpoint folder `<run dir>/export` when fit ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from mmr1.checkpoint import safe_torch_load
from mmr1.config import Config
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel
from mmr1.objectives.base import ObjectiveModule

MODEL_PREFIX = "model."  # where ObjectiveModule keeps the MultimodalModel in its state dict


def export_ckpt(ckpt_path: str | Path, out_folder: str | Path) -> Path:
    """Turn a Lightning `.ckpt` written by an ObjectiveModule into a checkpoint folder (weights-only load)."""
    checkpoint = safe_torch_load(ckpt_path)
    if "mmr1_config" not in checkpoint:
        raise ValueError(f"{ckpt_path}: no mmr1_config; expected a checkpoint written by an mmr1 objective")
    model = MultimodalModel(Config.from_dict(checkpoint["mmr1_config"]))
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    model.load_state_dict(state)
    return model.save_pretrained(out_folder, _tokenizer(checkpoint.get("mmr1_tokenizer")))


def _tokenizer(stored: Optional[dict]) -> Tokenizer:
    if stored is None:
        return Tokenizer.default()
    import tokenizers

    return Tokenizer(tokenizers.Tokenizer.from_str(stored["json"]), stored["pad_token"], stored["mask_token"])


class ExportBest(L.Callback):
    """When fit ends, write the best (else the last) checkpoint's model to `<run dir>/export`."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: ObjectiveModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "export"
        callback = trainer.checkpoint_callback
        path = callback and (callback.best_model_path or callback.last_model_path)
        if path:
            export_ckpt(path, folder)
        else:
            pl_module.model.save_pretrained(folder, pl_module.tokenizer or Tokenizer.default())


class TrainingCLI(LightningCLI):
    """LightningCLI with `--model` an ObjectiveModule and `--data` a datamodule taking the model's Config."""

    def __init__(self, args: list[str], run: bool = True):
        super().__init__(
            ObjectiveModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_kwargs={"overwrite": True}, args=args, run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.mode": "min", "checkpoint.save_last": True,
                             "checkpoint.filename": "best-{step}"})
        parser.link_arguments("model.config", "data.init_args.config", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.loggers:
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        trainer.callbacks.append(ExportBest())
        return trainer


def cli_main(args: list[str]) -> None:
    """Run `fit|validate|test|predict` with LightningCLI arguments: ["fit", "--config", "configs/tiny_sft.yaml"]."""
    TrainingCLI(args)
