"""JSONL manifests: cheap validation up front, decoding per item, bad records never silent.

Every error names the manifest, the line and the field: `data/train.jsonl:17: audio: ...`.
With `skip_bad_records`, records that fail the up-front checks are left out and listed
in `dataset.skipped`; a record whose file fails to decode later is replaced by the next
decodable one, and the failure travels with the example (`example["skipped"]`) so the
datamodule can report it from any worker process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from mmr1.datamodules.records import RecordProcessor, check_record


def read_manifest(path: str | Path, objective: Optional[str], skip_bad_records: bool = False
                  ) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """(line, record) for records passing the cheap checks (JSON, fields, files exist), (line, reason) for the rest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    records, skipped = [], []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"record: not valid JSON ({e})") from e
                records.append((line_no, check_record(record, objective, path.parent)))
            except ValueError as e:
                if not skip_bad_records:
                    raise ValueError(f"{path}:{line_no}: {e}") from e
                skipped.append((line_no, str(e)))
    return records, skipped


class ManifestDataset(Dataset):
    """Map-style dataset over one JSONL manifest; items are examples for the collator."""

    def __init__(self, path: str | Path, processors: RecordProcessor, objective: str, skip_bad_records: bool = False):
        self.path = Path(path)
        self.processors = processors
        self.skip_bad_records = skip_bad_records
        self.records, self.skipped = read_manifest(self.path, objective, skip_bad_records)
        if not self.records:
            raise ValueError(f"{self.path}: no usable records ({len(self.skipped)} skipped)")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        failures = []
        for offset in range(len(self.records)):
            line, record = self.records[(index + offset) % len(self.records)]
            try:
                example = self.processors(record, self.path.parent)
            except ValueError as e:
                if not self.skip_bad_records:
                    raise ValueError(f"{self.path}:{line}: {e}") from e
                if all(line != known for known, _ in self.skipped):
                    self.skipped.append((line, str(e)))
                failures.append(f"{self.path}:{line}: {e}")
                continue
            example["skipped"] = failures
            return example
        raise ValueError(f"{self.path}: no record decodes; first failure: {failures[0]}")
