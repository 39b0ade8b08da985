"""The real-data digits task: a handwritten digit (scikit-learn's `load_digits`) + a spoken digit
(the Free Spoken Digit Dataset) + a question that needs both → an exact answer with one line of
reasoning ("The picture shows 7. The sound says 3. 7 + 3 = 10.").

Splits never share a speaker's voice or an image with the test split:
- audio: the test speaker's clips are the test split (leave-one-speaker-out); of the other
  speakers, takes 0–4 (FSDD's own test convention) form the selection split `val`, used to
  choose hyper-parameters, and takes 5–49 the training split;
- images: split by index — the first 70% train, the next 10% val, the last 20% test.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPEAKERS = ("george", "jackson", "lucas", "theo", "yweweler")
IMAGE_SPLITS = {"train": (0.0, 0.7), "val": (0.7, 0.8), "test": (0.8, 1.0)}  # fractions of load_digits' order
VAL_TAKES = range(5)  # FSDD's test takes, used here as the selection split of the training speakers
_CLIP = re.compile(r"(\d)_([a-z]+)_(\d+)\.wav")


@dataclass(frozen=True)
class Question:
    """One question kind: its wording, its answer and the last sentence of the reasoning."""

    kind: str
    text: str

    def answer(self, image: int, sound: int) -> int:
        return {"sum": image + sound, "difference": image - sound, "product": image * sound,
                "larger": max(image, sound)}[self.kind]

    def step(self, image: int, sound: int) -> str:
        answer = self.answer(image, sound)
        if self.kind == "larger":
            return f"The larger is {answer}."
        sign = {"sum": "+", "difference": "-", "product": "*"}[self.kind]
        return f"{image} {sign} {sound} = {answer}."


QUESTIONS = (
    Question("sum", "What is the digit in the picture plus the digit in the sound?"),
    Question("difference", "What is the digit in the picture minus the digit in the sound?"),
    Question("product", "What is the digit in the picture times the digit in the sound?"),
    Question("larger", "Which is larger, the digit in the picture or the digit in the sound?"),
)


def captions(image: int, sound: int) -> dict[str, str]:
    """Each medium's own caption, the reasoning's sentence about it (`image_caption` / `audio_caption`: what
    `ContrastiveModule(medium_captions=True)` pairs that medium with, so the picture is never scored on the
    sound's digit)."""
    return {"image_caption": f"The picture shows {image}.", "audio_caption": f"The sound says {sound}."}


def reasoning(image: int, sound: int, question: Question) -> str:
    """The one-line reasoning every record carries; `perceived_digits` reads its first two digits back."""
    media = captions(image, sound)
    return f"{media['image_caption']} {media['audio_caption']} {question.step(image, sound)}"


def negatives(image: int, sound: int, question: Question) -> dict[str, list[str]]:
    """The record's reasoning made wrong about one medium (the hard negatives of `ContrastiveModule(
    hard_negatives=True)`): the picture's digit, or the sound's, moved 1, 4 and 7 along (mod 10), the rest
    of the reasoning recomputed from it, so each negative is a reasoning a record could have."""
    steps = (1, 4, 7)
    return {"image_negatives": [reasoning((image + k) % 10, sound, question) for k in steps],
            "audio_negatives": [reasoning(image, (sound + k) % 10, question) for k in steps]}


_PERCEIVED = re.compile(r"picture shows (-?\d+)\.\s*The sound says (-?\d+)")


def perceived_digits(text: str | None) -> tuple[int | None, int | None]:
    """(image digit, spoken digit) a model wrote in its reasoning; None where it wrote none."""
    match = _PERCEIVED.search(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


def speaker_clips(fsdd: Path, speakers: tuple[str, ...], takes: range | None = None) -> list[tuple[Path, int]]:
    """(wav path, digit) of the named speakers, optionally only the given take numbers, sorted."""
    recordings = Path(fsdd) / "recordings"
    if not recordings.is_dir():
        raise FileNotFoundError(f"fsdd: {recordings} is not a folder; expected the Free Spoken Digit Dataset")
    clips = []
    for path in sorted(recordings.glob("*.wav")):
        match = _CLIP.fullmatch(path.name)
        if match and match.group(2) in speakers and (takes is None or int(match.group(3)) in takes):
            clips.append((path, int(match.group(1))))
    if not clips:
        raise FileNotFoundError(f"fsdd: no recordings of {list(speakers)} in {recordings}")
    return clips


def clip_speaker(path: Path) -> str:
    """The speaker of an FSDD recording, from its name ("4_jackson_27.wav" -> "jackson")."""
    match = _CLIP.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"fsdd: {path} is not named DIGIT_SPEAKER_TAKE.wav")
    return match.group(2)


def split_clips(fsdd: Path, test_speaker: str) -> dict[str, list[tuple[Path, int]]]:
    if test_speaker not in SPEAKERS:
        raise ValueError(f"test_speaker: expected one of {list(SPEAKERS)}, got {test_speaker!r}")
    others = tuple(s for s in SPEAKERS if s != test_speaker)
    train_takes = range(VAL_TAKES.stop, 50)
    return {"train": speaker_clips(fsdd, others, train_takes), "val": speaker_clips(fsdd, others, VAL_TAKES),
            "test": speaker_clips(fsdd, (test_speaker,))}


def write_images(out: Path, image_size: int) -> dict[str, list[tuple[str, int]]]:
    """Every `load_digits` image as a `image_size`² grey PNG under out/images; (relative path, digit) per split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ValueError("scikit-learn: needed for its bundled digits (pip install scikit-learn)") from e

    digits = load_digits()
    (out / "images").mkdir(parents=True, exist_ok=True)
    n = len(digits.images)
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, (lo, hi) in IMAGE_SPLITS.items():
        rows = []
        for i in range(int(lo * n), int(hi * n)):
            name = f"images/{i:04d}.png"
            pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)  # [8, 8], ink = white
            Image.fromarray(pixels, "L").resize((image_size, image_size), Image.BILINEAR).save(out / name)
            rows.append((name, int(digits.target[i])))
        splits[split] = rows
    return splits


def write(out: str | Path, fsdd: str | Path, test_speaker: str = "theo", sizes: dict[str, int] | None = None,
          seed: int = 0, image_size: int = 32) -> dict[str, Path]:
    """Write train/val/test manifests (JSONL) + PNGs under `out`; returns split -> manifest path."""
    out, fsdd = Path(out), Path(fsdd)
    sizes = {"train": 6000, "val": 400, "test": 500, **(sizes or {})}
    images = write_images(out, image_size)
    clips = split_clips(fsdd, test_speaker)
    paths = {}
    for split, n in sizes.items():
        rng = random.Random(f"{seed}-{split}")
        path = out / f"{split}.jsonl"
        with path.open("w") as f:
            for i in range(n):
                image, image_digit = rng.choice(images[split])
                clip, sound_digit = rng.choice(clips[split])
                question = rng.choice(QUESTIONS)
                record = {
                    "id": f"digits-{split}-{i}", "image": image, "audio": os.path.relpath(clip, out),
                    "question": question.text, "reasoning": reasoning(image_digit, sound_digit, question),
                    "answer": str(question.answer(image_digit, sound_digit)),
                    **captions(image_digit, sound_digit), **negatives(image_digit, sound_digit, question),
                }
                f.write(json.dumps(record) + "\n")
        paths[split] = path
    return paths
