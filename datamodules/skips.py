"""The bad records a run skipped: each reported once (manifest:line: reason), counted per epoch and per run."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Optional

log = logging.getLogger(__name__)

STAGES = {"train": "train", "val": "validate", "test": "test"}  # dataset split -> the Lightning stage reading it
SANITY = {"sanity_check": "validate"}  # the sanity check reads the validation split


class SkipLedger:
    """Gathers skip reports from batches (any worker) and from up-front manifest checks."""

    def __init__(self):
        self.reasons: dict[str, str] = {}  # "manifest:line" -> reason, every record skipped in the run
        self.upfront: dict[Optional[str], set[str]] = defaultdict(set)  # stage -> records left out of its dataset
        self.epoch: dict[Optional[str], set[str]] = defaultdict(set)  # stage -> records skipped since its epoch began

    def add(self, stage: Optional[str], where: str, reason: str, every_epoch: bool = False) -> None:
        """Record one skip; the first time a record is skipped it is logged with its reason.
        every_epoch: left out of the dataset up front, so counted in every epoch of `stage`."""
        if where not in self.reasons:
            self.reasons[where] = reason
            log.warning("skipped bad record %s: %s", where, reason)
        (self.upfront if every_epoch else self.epoch)[stage].add(where)

    def end_epoch(self, stage: Optional[str]) -> int:
        """How many distinct records `stage`'s epoch skipped (up-front ones included); starts the next epoch."""
        count = len(self.epoch[stage] | self.upfront[stage])
        self.epoch[stage] = set()
        return count

    @property
    def total(self) -> int:
        """Distinct records skipped in the whole run."""
        return len(self.reasons)
