"""`mmr1 fit|validate|test`: a LightningCLI over the objectives and datamodules.

The model's Config is linked into the datamodule (`data.config`), so the inputs always match
the model being trained. A run's folder is `<trainer.default_root_dir>/lightning_logs/version_N`
(unless the config names its own loggers): metrics.csv and TensorBoard events, `checkpoints/` with
the last (every `last_checkpoint.every_n_train_steps`) and the best (val/loss) weights, and
`export/`, the best weights as a checkpoint folder when fit ends (or the start model's, with the
`mmr1.callbacks.StartCandidate` callback, when no checkpoint beat it on validation). Checkpoint files are
written atomically, and `--ckpt_path last` after a crash continues with the same data order and RNG states
as an uninterrupted run (`mmr1.callbacks`). Bad input (a wrong option, a config that does not validate,
an `init_from` folder that does not load) is one line, as for every command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI

from mmr1.callbacks import add_run_callbacks, validate_start
from mmr1.objectives.base import ObjectiveModule


class TrainingCLI(LightningCLI):
    """LightningCLI with `--model` an ObjectiveModule and `--data` a datamodule taking the model's Config."""

    def __init__(self, args: list[str], run: bool = True):
        super().__init__(
            ObjectiveModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False}, args=args, run=run,
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
        """Adds a rich progress bar (unless disabled or another is given), the run folder's loggers (unless
        the config names its own) and `mmr1.callbacks.add_run_callbacks`."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, RichProgressBar()]
        if config.get("logger") in (None, True):
            kwargs["logger"] = self._run_loggers(Path(config.get("default_root_dir") or "."))
        return add_run_callbacks(super().instantiate_trainer(**kwargs))

    def before_fit(self) -> None:
        """With `mmr1.callbacks.StartCandidate` among `trainer.callbacks`, scores the start model before fit
        (unless resuming), so the export is the best of the start and the checkpoints."""
        arguments = self.config_init[self.subcommand] if self.subcommand else self.config_init
        validate_start(self.trainer, self.model, self.datamodule, arguments.get("ckpt_path"))

    def _run_loggers(self, root: Path) -> list:
        """CSV (`mmr1 plot`) and TensorBoard loggers sharing the run folder `root/lightning_logs/version_N`,
        which also holds `checkpoints/` and `export/`. `--ckpt_path last` resumes the newest version that
        has a last.ckpt, in that same folder; otherwise N is the next free number."""
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        runs = root / "lightning_logs"
        versions = sorted(int(p.name.removeprefix("version_")) for p in runs.glob("version_*")
                          if p.name.removeprefix("version_").isdigit())
        version = versions[-1] + 1 if versions else 0
        arguments = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if arguments.get("ckpt_path") == "last":
            resumable = [v for v in versions if (runs / f"version_{v}" / "checkpoints" / "last.ckpt").is_file()]
            if resumable:
                version = resumable[-1]
                arguments["ckpt_path"] = str(runs / f"version_{version}" / "checkpoints" / "last.ckpt")
        return [CSVLogger(root, name="lightning_logs", version=version),
                TensorBoardLogger(root, name="lightning_logs", version=version)]


def fit(argv: list[str]) -> int:
    """`mmr1 fit --config configs/tiny_sft.yaml [--trainer.max_steps 50 …]`; the last line printed is
    `exported FOLDER`."""
    return cli_main(["fit", *argv])


def validate(argv: list[str]) -> int:
    """`mmr1 validate --config configs/tiny_sft.yaml --ckpt_path F.ckpt`."""
    return cli_main(["validate", *argv])


def test(argv: list[str]) -> int:
    """`mmr1 test --config configs/tiny_sft.yaml --ckpt_path F.ckpt`."""
    return cli_main(["test", *argv])


def cli_main(args: list[str]) -> int:
    """Run `fit|validate|test` with LightningCLI arguments: ["fit", "--config", "configs/tiny_sft.yaml"].
    A command line or config that does not validate raises ValueError with jsonargparse's reason."""
    import jsonargparse

    program, sys.argv = sys.argv, sys.argv[:1]  # the arguments are `args`; LightningCLI warns when both are set
    try:
        TrainingCLI(args)
    except (argparse.ArgumentError, jsonargparse.ArgumentError, ValueError) as e:
        reason = _reason(e)
        if reason is e and isinstance(e, ValueError):
            raise
        raise ValueError(str(reason)) from e
    finally:
        sys.argv = program
    return 0


def _reason(error: BaseException) -> BaseException:
    """The first exception along `error`'s causes that is not jsonargparse's list of the Union subtypes it
    tried (the model and data are `class_path` unions), e.g. "init_from: cannot load …"."""
    while error.__cause__ is not None and "Union subtypes" in str(error):
        error = error.__cause__
    return error
