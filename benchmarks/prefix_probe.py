"""Which digit does a vocabulary prefix name? For a checkpoint built with `fusion.vocab_prefix` (the export of
configs/digits_prefix_words.yaml, or of the SFT after it), each record of an `mmr1 data digits` manifest: each
medium's prefix positions, their distributions over the core's vocabulary averaged, and of the ten digit tokens
the one with the most mass, against the digit the record's reasoning names ("The picture shows 7. The sound says
3."). It runs no core, so it tells whether a stage left the digit in the prefix, apart from whether the core
reads it. Chance is 10%.

    .venv/bin/python benchmarks/prefix_probe.py CHECKPOINT MANIFEST [--limit N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mmr1.checkpoint import load_model
from mmr1.datamodules.collate import media
from mmr1.datamodules.digits import perceived_digits
from mmr1.datamodules.manifest import read_manifest
from mmr1.datamodules.records import RecordProcessor
from mmr1.encoders.output import masked_mean
from mmr1.model import media_inputs

MEDIA = ("image", "audio")  # the order of perceived_digits


def digit_tokens(tokenizer) -> torch.Tensor:
    """The ten digits' token ids [10]; each digit must be one token of the vocabulary."""
    ids = [tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"tokenizer: each digit must be one token, got {ids}")
    return torch.tensor([i[0] for i in ids])


@torch.no_grad()
def named_digits(model, tokenizer, manifest: Path, limit: int | None = None, batch: int = 64) -> dict[str, float]:
    """Per medium, the share of records whose prefix names (most mass among the digit tokens) its own digit."""
    model.eval()
    records = [record for _, record in read_manifest(manifest, "sft")[0]][:limit]  # a bad record raises
    processor, digits = RecordProcessor.from_config(model.config), digit_tokens(tokenizer)
    right = dict.fromkeys(MEDIA, 0)
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        examples = [processor(record, manifest.parent) for record in chunk]
        probs, mask, spans = model.prefix_vocabulary(**media_inputs(media(examples)))  # [B, P, V], [B, P]
        truth = torch.tensor([digits_of(record, manifest) for record in chunk])  # [B, 2]
        for column, medium in enumerate(MEDIA):
            first, end = spans[medium]
            mean = masked_mean(probs[:, first:end], mask[:, first:end])  # [B, V]
            right[medium] += int((mean[:, digits].argmax(-1) == truth[:, column]).sum())
    return {"records": len(records), **{f"{medium}_named": right[medium] / len(records) for medium in MEDIA}}


def digits_of(record: dict, manifest: Path) -> tuple[int, int]:
    """(image digit, spoken digit) the record's reasoning names."""
    said = perceived_digits(record.get("reasoning"))
    if None in said:
        raise ValueError(f"{manifest}: record {record.get('id')} has no reasoning naming both digits "
                         "('The picture shows 7. The sound says 3.')")
    return said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder built with fusion.vocab_prefix")
    parser.add_argument("manifest", type=Path, help="an `mmr1 data digits` manifest (val.jsonl, test.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="the first N records only")
    args = parser.parse_args()
    model, tokenizer = load_model(args.checkpoint)
    scores = named_digits(model, tokenizer, args.manifest, args.limit)
    print(json.dumps({k: round(v, 4) for k, v in scores.items()}))


if __name__ == "__main__":
    main()
