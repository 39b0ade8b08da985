"""The synthetic generator as a map-style dataset: item i is rendered on access."""

from __future__ import annotations

from torch.utils.data import Dataset

from mmr1.datamodules.records import RecordProcessor
from mmr1.datamodules.synth import Synth


class SynthDataset(Dataset):
    """`size` records of one synthetic split; item i is the same on every epoch, worker and rank."""

    def __init__(self, synth: Synth, size: int, processors: RecordProcessor):
        self.synth = synth
        self.size = size
        self.processors = processors

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic records")
        return self.processors(self.synth.record(index))
