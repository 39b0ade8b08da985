"""One record (a manifest line or a synthetic sample) → one example the collator batches.

A record is a dict with the manifest fields; media are file paths (relative to `root`)
or already-decoded objects (PIL image; numpy audio with a `sample_rate` field). An
example holds `pixel_values` [3, H, W] / `audio_values` [S] (None when absent) and the
record's strings.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mmr1.config import Config
from mmr1.datamodules.processors import AudioAugment, AudioProcessor, ImageAugment, ImageProcessor
from mmr1.datamodules.regions import check_regions

OBJECTIVES = ("sft", "rl", "paired", "masked", "preference")
CAPTION_KEYS = ("image_caption", "audio_caption")  # what one medium alone shows (contrastive: that medium's text)
TEXT_FIELDS = ("id", "image", "audio", "text", "question", "answer", "reasoning", "caption", "chosen",
               "rejected") + CAPTION_KEYS
STRING_KEYS = ("id", "text", "question", "answer", "reasoning", "caption", "chosen", "rejected") + CAPTION_KEYS
NEGATIVE_KEYS = ("image_negatives", "audio_negatives")  # captions wrong about that medium only (contrastive)
# all a record may have; regions: boxes of the image with the text naming each (datamodules/regions.py)
FIELDS = TEXT_FIELDS + NEGATIVE_KEYS + ("regions", "choices", "label", "difficulty", "sample_rate")
REQUIRED = {  # objective -> fields every record must have
    "sft": ("question", "answer"),
    "rl": ("question", "answer"),
    "preference": ("question", "chosen", "rejected"),
    "paired": (),
    "masked": (),
}


def check_record(record: object, objective: Optional[str], root: Optional[Path] = None) -> dict:
    """The record with `answer`/`id` as strings; ValueError('field: reason') when it is unusable."""
    if not isinstance(record, dict):
        raise ValueError(f"record: expected a JSON object, got {type(record).__name__}")
    record = dict(record)
    for key in ("id", "answer"):
        if isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool):
            record[key] = str(record[key])
    for key in TEXT_FIELDS:
        value = record.get(key)
        if value is None or isinstance(value, str):
            continue
        if key in ("image", "audio") and not isinstance(value, (int, float, bool, list, dict)):
            continue  # already decoded (synthetic records), not a JSON value
        raise ValueError(f"{key}: expected a string, got {type(value).__name__}")
    choices = record.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise ValueError("choices: expected a list of strings")
    for key in NEGATIVE_KEYS:
        check_negatives(key, record.get(key), paired_text(record))
    check_regions(record.get("regions"), record.get("image") is not None)
    for key in ("question", "text", "caption") + CAPTION_KEYS:
        if key in record and record[key] is not None and not record[key].strip():
            raise ValueError(f"{key}: empty")
    if objective is not None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
        for key in REQUIRED[objective]:
            if record.get(key) is None or (isinstance(record[key], str) and not record[key].strip()):
                raise ValueError(f"{key}: missing, and the {objective!r} objective needs it")
        present = [k for k in ("image", "audio") if record.get(k) is not None]
        text = record.get("caption") or record.get("text")
        if objective == "paired" and len(present) + bool(text or record.get("reasoning")
                                                         or any(record.get(f"{m}_caption") for m in present)) < 2:
            raise ValueError("caption: a 'paired' record needs two of image, audio and caption/text/reasoning "
                             "(or the medium's own image_caption / audio_caption)")
        if objective == "masked" and not (present or text or record.get("question")):
            raise ValueError("record: a 'masked' record needs an image, audio or text")
    if root is not None:
        for key in ("image", "audio"):
            if isinstance(record.get(key), str) and not (root / record[key]).is_file():
                raise ValueError(f"{key}: file not found: {root / record[key]}")
    return record


def paired_text(record: dict) -> Optional[str]:
    """The text contrastive alignment pairs a record's media with: its caption, else text, else reasoning."""
    return record.get("caption") or record.get("text") or record.get("reasoning")


def medium_text(record: dict, medium: str) -> Optional[str]:
    """The text `ContrastiveModule(medium_captions=True)` pairs one medium with: its own caption
    (`image_caption` / `audio_caption`: what that medium alone shows), else the record's `paired_text`."""
    return record.get(f"{medium}_caption") or paired_text(record)


def check_negatives(key: str, negatives: object, text: Optional[str]) -> None:
    """`image_negatives` / `audio_negatives`: None, or a list of non-empty strings, each the record's paired
    text (`paired_text`) made wrong about that one medium, so never equal to it."""
    if negatives is None:
        return
    if not (isinstance(negatives, list) and all(isinstance(n, str) and n.strip() for n in negatives)):
        raise ValueError(f"{key}: expected a list of non-empty strings")
    if negatives and not text:
        raise ValueError(f"{key}: a record with negatives needs the caption (or text, or reasoning) they are "
                         "negatives of")
    if text in negatives:
        raise ValueError(f"{key}: {text!r} is the record's own caption, so it cannot be a negative")


def unknown_fields(record: dict) -> list[tuple[str, str]]:
    """(name, note) for each field mmr1 does not read, with the closest known name when one is close."""
    notes = []
    for name in record:
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            notes.append((name, f"unknown field {name!r} is ignored{hint}; known: {', '.join(FIELDS[:-1])}"))
    return notes


class RecordProcessor:
    """Decodes a record's media with the model's image and audio processors."""

    def __init__(self, image: Optional[ImageProcessor], audio: Optional[AudioProcessor]):
        self.image = image
        self.audio = audio

    @classmethod
    def from_config(cls, config: Config, train: bool = False,
                    augment: Optional[ImageAugment] = None,
                    audio_augment: Optional[AudioAugment] = None) -> "RecordProcessor":
        """Processors for the modalities the model has; media of the others are ignored."""
        return cls(ImageProcessor(config.vision, train, augment) if config.vision is not None else None,
                   AudioProcessor(config.audio, train, audio_augment) if config.audio is not None else None)

    def __call__(self, record: dict, root: Optional[Path] = None) -> dict:
        """The example; ValueError('image: ...'/'audio: ...') when a file does not decode."""
        example = {key: record.get(key) for key in STRING_KEYS}
        if example["question"] is not None and record.get("choices"):
            example["question"] = f"{example['question'].strip()} Choices: {', '.join(record['choices'])}."
        example["label"], example["choices"] = record.get("label"), record.get("choices")
        for key in NEGATIVE_KEYS:
            example[key] = record.get(key)
        example["pixel_values"] = example["audio_values"] = None
        image, audio = record.get("image"), record.get("audio")
        example["regions"] = None
        if image is not None and self.image is not None:
            regions = record.get("regions")
            if regions is None:
                example["pixel_values"] = _decode("image", self.image, _resolve(image, root))
            else:  # the boxes follow the image through resize and augmentation: (boxes [R, 4], texts)
                boxes = torch.tensor([r["box"] for r in regions], dtype=torch.float32).reshape(-1, 4)
                example["pixel_values"], moved = _decode("image", self.image, _resolve(image, root), boxes)
                example["regions"] = (moved, [r["text"] for r in regions])
        if audio is not None and self.audio is not None:
            args = (audio, record["sample_rate"]) if isinstance(audio, np.ndarray) else (_resolve(audio, root),)
            example["audio_values"], _ = _decode("audio", self.audio, *args)
        return example


def _resolve(media, root: Optional[Path]):
    """A path relative to the manifest's folder; decoded media unchanged."""
    return root / media if isinstance(media, str) and root is not None else media


def _decode(field: str, processor, *args):
    try:
        return processor(*args)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from e
