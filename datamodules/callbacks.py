"""Epoch-end report of the bad records a datamodule skipped."""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger(__name__)


class BadRecordReport(L.Callback):
    """After each train/validation/test epoch, warns with the count and lines of skipped records."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, "validation")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, "test")

    def _report(self, trainer: L.Trainer, stage: str) -> None:
        pop = getattr(trainer.datamodule, "pop_skipped", None)
        reports = pop() if pop is not None else []
        if reports:
            log.warning("after the %s epoch %d (rank %d): skipped %d bad record(s):\n  %s",
                        stage, trainer.current_epoch, trainer.global_rank, len(reports), "\n  ".join(reports))
