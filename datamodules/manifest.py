"""JSONL manifests: cheap validation up front, the full validation per item, bad records never silent.

Every error names the manifest, the line and the field: `data/train.jsonl:17: audio: ...`.
`ManifestDataset.example` is the one validation of a record, used by training and by
`mmr1 data check` alike: fields and files (up front), decoding and finite media (the record
processors), token lengths (the collator's `encode`). With `skip_bad_records`, records that
fail up front are left out and listed in `dataset.skipped`; a record that fails later becomes
a skip marker `{"skipped": (where, reason)}`, which the collator drops from its batch — it is
never replaced by another record — and whose report travels with the batch from any worker.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

from torch.utils.data import Dataset

from mmr1.datamodules.records import RecordProcessor, check_record, unknown_fields

log = logging.getLogger(__name__)


def read_manifest(path: str | Path, objective: Optional[str], skip_bad_records: bool = False
                  ) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """(line, record) for records passing the cheap checks (JSON, fields, files exist), (line, reason) for the rest.
    An empty manifest is an error; each unknown field name is warned about once, at its first line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    records, skipped, warned = [], [], set()
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
                continue
            for name, note in unknown_fields(record):
                if name not in warned:
                    warned.add(name)
                    log.warning("%s:%d: %s", path, line_no, note)
    if not records and not skipped:
        raise ValueError(f"{path}: empty manifest; expected one JSON record per line")
    return records, skipped


class ManifestDataset(Dataset):
    """Map-style dataset over one JSONL manifest; items are examples (or skip markers) for the collator."""

    def __init__(self, path: str | Path, processors: RecordProcessor, objective: Optional[str],
                 skip_bad_records: bool = False, encode: Optional[Callable[[dict], object]] = None):
        """encode: the collator's per-example tokenization (`Collator.encode`), run on every item so an
        over-long record fails here, with its line, instead of in a batch."""
        self.path = Path(path)
        self.processors = processors
        self.skip_bad_records = skip_bad_records
        self.encode = encode
        self.records, self.skipped = read_manifest(self.path, objective, skip_bad_records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        try:
            return self.example(index)
        except BadRecord as e:
            if not self.skip_bad_records:
                raise
            return {"skipped": (e.where, e.reason)}

    def example(self, index: int) -> dict:
        """Record `index` decoded and checked exactly as training uses it; BadRecord ('manifest:line: reason')."""
        line, record = self.records[index]
        try:
            example = self.processors(record, self.path.parent)
            if self.encode is not None:
                self.encode(example)
        except ValueError as e:
            raise BadRecord(f"{self.path}:{line}", str(e)) from e
        return example


class BadRecord(ValueError):
    """A record that cannot be used: `where` is 'manifest:line', `reason` names the field."""

    def __init__(self, where: str, reason: str = ""):  # one argument: rebuilt from a DataLoader worker's message
        super().__init__(f"{where}: {reason}" if reason else where)
        self.where, self.reason = where, reason
