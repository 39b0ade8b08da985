"""Fault tolerance for `mmr1 fit`: atomic checkpoint files, an exactly resumable data order, and a stop
before non-finite weights can be saved; and the export of the best weights (`ExportBest`), the start model's
among them with `StartCandidate`.

Lightning 2.6 restores the epoch and the batch index of a mid-epoch checkpoint, but a plain
DataLoader restarts its epoch from the first batch of a fresh shuffle, and the global RNG
(augmentation, SpecAugment) is not saved; Lightning only fast-forwards loaders that implement
`state_dict`/`load_state_dict` themselves. `ResumableSampling` makes any map-style train loader
resumable instead: the shuffle becomes a function of (seed, epoch), a resumed run skips the
batches already trained in its epoch, and the RNG states travel in the checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, RandomSampler, Sampler

from mmr1.checkpoint import first_non_finite


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then `os.replace`s it into place.

    A crash or kill while saving leaves the previous file (e.g. last.ckpt) whole; the temporary
    file starts with "." so `--ckpt_path last` never picks it up.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


class FiniteWeights(L.Callback):
    """After each optimizer step, stops training if a parameter or an optimizer state holds NaN or Inf.

    The loss guard sees a diverged update only at the next forward; by then a checkpoint may hold it.
    This check runs in `on_train_batch_end`, before any checkpoint callback (Lightning runs those
    last), so last.ckpt keeps the last finite weights. Under DDP/FSDP every rank stops together.
    """

    def __init__(self):
        self.checked_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.checked_step:  # no optimizer step in this batch (gradient accumulation)
            return
        self.checked_step = step
        parameters = ((f"parameter {name!r}", p) for name, p in pl_module.named_parameters())
        bad = first_non_finite(parameters) or first_non_finite(_optimizer_states(trainer, pl_module))
        if trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            raise FloatingPointError(
                f"step {step}: {bad or 'a tensor on another rank'} is not finite after the optimizer step; "
                "stopped before saving it, so the last checkpoint holds finite weights (lower the learning "
                "rate or clip gradients, then resume)")


def _optimizer_states(trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[tuple[str, torch.Tensor]]:
    """("optimizer state <key> of <parameter>", tensor) for every optimizer's per-parameter state."""
    names = {id(p): name for name, p in pl_module.named_parameters()}
    for optimizer in trainer.optimizers:
        for param, state in optimizer.state.items():
            for key, value in state.items():
                yield f"optimizer state {key!r} of {names.get(id(param), '?')!r}", value


class EpochSampler(Sampler[int]):
    """Wraps a loader's sampler: shuffles with a generator seeded by (seed, epoch) and can skip a prefix.

    A RandomSampler draws its permutation from the global RNG; this one draws it from
    `seed + epoch`, so a resumed run sees the same order. Other samplers (sequential, Lightning's
    DistributedSampler, which is already seeded per epoch) keep their order.
    """

    def __init__(self, inner: Sampler, seed: int):
        self.inner, self.seed = inner, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[int]:
        if isinstance(self.inner, RandomSampler):
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = iter(torch.randperm(len(self.inner), generator=generator).tolist())
        else:
            order = iter(self.inner)
        skip, self.skip = self.skip, 0
        for i, index in enumerate(order):
            if i >= skip:
                yield index


class ResumableSampling(L.Callback):
    """Makes the train loader's order exact across `--ckpt_path` resumes (map-style datasets, 0 workers for exact
    augmentation: worker processes seed themselves before the RNG states are restored)."""

    def __init__(self, seed: Optional[int] = None):
        """seed: of the shuffle; None = the `seed_everything` seed (PL_GLOBAL_SEED), else 0."""
        self.seed = seed
        self.epoch, self.batches_done = 0, 0
        self.rng: Optional[dict] = None  # RNG states of the checkpoint being resumed

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        for loader in _loaders(trainer.train_dataloader):
            sampler = EpochSampler(loader.batch_sampler.sampler, seed)
            sampler.set_epoch(trainer.current_epoch)
            if self.rng is not None and self.epoch == trainer.current_epoch:
                sampler.skip = self.batches_done * loader.batch_size
            loader.batch_sampler.sampler = sampler
        if self.rng is not None:
            _set_rng(self.rng)
            self.rng = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.batches_done = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.epoch, self.batches_done = trainer.current_epoch, batch_idx + 1

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "rng": _get_rng()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.batches_done, self.rng = state_dict["epoch"], state_dict["batches_done"], state_dict["rng"]


def _loaders(train_dataloader: Any) -> list[DataLoader]:
    """The DataLoaders (with a batch sampler) inside whatever Lightning holds as the train loader."""
    if isinstance(train_dataloader, dict):
        loaders = list(train_dataloader.values())
    else:
        loaders = list(train_dataloader) if isinstance(train_dataloader, (list, tuple)) else [train_dataloader]
    return [dl for dl in loaders if isinstance(dl, DataLoader) and dl.batch_sampler is not None]


def _get_rng() -> dict[str, Any]:
    """torch, numpy and Python RNG states as plain data (loadable with `weights_only=True`)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, keys.tolist(), position, has_gauss, gauss]}


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))


def _tuples(x: Any) -> Any:
    """random.setstate needs the nested tuples back (a checkpoint may store them as lists)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class StartCandidate(L.Callback):
    """Makes the model a run starts from (the module's `init_from` folder) a candidate for its export, scored as
    every checkpoint is: `validate_start` validates it before fit with the monitoring checkpoint's metric, and
    when fit ends `ExportBest` exports that folder itself unless a checkpoint scored strictly better
    (transformers' `load_best_model_at_end`, with step 0 among the candidates). A fine-tuning run then never
    hands on a model that does worse on its validation set than the one it was given. Its score travels in
    the checkpoints, so a resumed run keeps the start's."""

    def __init__(self) -> None:
        self.score: Optional[float] = None  # the start's monitored metric; None until validated
        self.folder: Optional[str] = None  # the start's model folder

    def beaten_by(self, checkpoint: Any) -> bool:
        """Whether the monitoring ModelCheckpoint's best score is strictly better than the start's."""
        best = checkpoint.best_model_score
        if best is None or not checkpoint.best_model_path:
            return False
        best = float(best)
        return best > self.score if checkpoint.mode == "max" else best < self.score

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "folder": self.folder}

    @staticmethod
    def of(trainer: L.Trainer) -> Optional["StartCandidate"]:
        """The trainer's StartCandidate callback, or None."""
        return next((c for c in trainer.callbacks if isinstance(c, StartCandidate)), None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.score, self.folder = state_dict["score"], state_dict["folder"]


def validate_start(trainer: L.Trainer, module: L.LightningModule, datamodule: Any,
                   ckpt_path: Optional[str] = None) -> None:
    """With a `StartCandidate` among the trainer's callbacks and no checkpoint to resume (`ckpt_path`), score
    the start model: one `trainer.validate` before fit (logged at step 0). Call it just before `trainer.fit`."""
    candidate = StartCandidate.of(trainer)
    if candidate is None or (ckpt_path is not None and Path(ckpt_path).is_file()):
        return
    monitoring = trainer.checkpoint_callback
    if monitoring is None or not monitoring.monitor:
        raise ValueError("StartCandidate: needs a checkpoint callback with a monitor (checkpoint.monitor), "
                         "to score the start and the checkpoints alike")
    folder = getattr(module, "init_from", None)
    if folder is None:
        raise ValueError("StartCandidate: the run starts from no model folder; set the model's init_from")
    metrics = trainer.validate(module, datamodule, verbose=False)[0]
    if monitoring.monitor not in metrics:
        raise ValueError(f"StartCandidate: validation logged no {monitoring.monitor!r} (checkpoint.monitor); "
                         f"it logged {sorted(metrics)}")
    score = float(metrics[monitoring.monitor])
    if not math.isfinite(score):
        raise ValueError(f"StartCandidate: the start model's {monitoring.monitor} is {score}; expected a finite value")
    candidate.score, candidate.folder = score, str(folder)


class ExportBest(L.Callback):
    """When fit ends, write the best checkpoint's model (by the checkpoint callback's monitor) to
    `<run dir>/export` and print `exported <folder>`; with no monitor (`checkpoint.monitor: null`),
    the weights fit ended with. With a validated `StartCandidate` that no checkpoint beat, a copy of the start's
    model folder."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from mmr1.checkpoint import export_ckpt
        from mmr1.datamodules.tokenizer import Tokenizer

        folder = Path(trainer.log_dir or trainer.default_root_dir) / "export"
        callback = trainer.checkpoint_callback
        path = callback and callback.monitor and callback.best_model_path
        start = StartCandidate.of(trainer)
        validated = start is not None and start.score is not None
        keep_start = validated and not start.beaten_by(callback)
        if validated:
            best = "none" if callback.best_model_score is None else f"{float(callback.best_model_score):.4f}"
            print(f"{callback.monitor}: start {start.score:.4f}, best checkpoint {best}; exporting "
                  f"{'the start model ' + start.folder if keep_start else path}", flush=True)
        if keep_start:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(start.folder, folder)
        elif path:
            export_ckpt(path, folder)
        else:
            pl_module.export_model().save_pretrained(folder, pl_module.tokenizer or Tokenizer.default())
        print(f"exported {folder}", flush=True)


def add_run_callbacks(trainer: L.Trainer) -> L.Trainer:
    """What every mmr1 training run gets (`mmr1 fit` and each pipeline stage): LR monitoring when it logs,
    exact resume, a stop on non-finite weights, reports of skipped bad records, export of the best weights,
    and atomic checkpoint files."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    from mmr1.datamodules.callbacks import BadRecordReport

    if trainer.loggers:
        trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer.callbacks.insert(0, ResumableSampling())  # its batch count must be current when checkpoints save
    trainer.callbacks.insert(0, FiniteWeights())  # before any checkpoint callback saves the step
    trainer.callbacks.append(BadRecordReport())
    trainer.callbacks.append(ExportBest())
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer
