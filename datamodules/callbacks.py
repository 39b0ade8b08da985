"""Epoch-end and run-end reports of the bad records a datamodule skipped."""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger(__name__)


class BadRecordReport(L.Callback):
    """With `skip_bad_records`, after each train/validation/test epoch: warns with the number of records
    skipped in it and logs `data/skipped_<stage>` (that epoch) and `data/skipped_run` (the run so far);
    when fit or test ends, warns with the run's total."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # its skips are counted in the first validation epoch
            self._epoch(trainer, pl_module, "validate")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch(trainer, pl_module, "test")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer)

    def _epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        skips = _skips(trainer)
        if skips is None:
            return
        count = skips.end_epoch(stage)
        pl_module.log(f"data/skipped_{stage}", float(count))
        pl_module.log("data/skipped_run", float(skips.total))
        if count:
            log.warning("%s epoch %d (rank %d): skipped %d bad record(s); %d in the run so far", stage,
                        trainer.current_epoch, trainer.global_rank, count, skips.total)

    def _run(self, trainer: L.Trainer) -> None:
        skips = _skips(trainer)
        if skips is not None and skips.total:
            log.warning("run (rank %d): skipped %d bad record(s) in all:\n  %s", trainer.global_rank, skips.total,
                        "\n  ".join(f"{where}: {reason}" for where, reason in skips.reasons.items()))


def _skips(trainer: L.Trainer):
    """The datamodule's SkipLedger when it skips bad records, else None."""
    datamodule = trainer.datamodule
    if datamodule is None or not getattr(datamodule, "hparams", {}).get("skip_bad_records"):
        return None
    return getattr(datamodule, "skips", None)
