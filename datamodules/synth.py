"""Procedural multimodal reasoning records with verifiable answers.

A scene is a few coloured shapes (drawn with Pillow), listed from left to right, and a few
beeps (sine tones, low or high), listed in time order. Templated questions count, filter, add,
multiply and compare across the image and the sound, so most need both; a reasoning that counts
some of the items it lists keeps a running count beside them ("low (2 low)"). Record `index` of a
split is a pure function of (seed, split, index); a record belongs to the split its content hash
falls in, so train/val/test never share a scene+question, whatever the seed. Difficulty 0, never part of
the mix, is a perception curriculum: one shape or one beep per record, named ("It is a square.").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

from mmr1.datamodules.prompt import INSTRUCTION, format_response

SAMPLE_RATE = 16000
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 70), "blue": (50, 90, 240), "yellow": (235, 210, 30)}
KINDS = ("circle", "square", "triangle")
PITCHES = {"low": (330.0, 392.0, 440.0), "high": (1320.0, 1568.0, 1760.0)}  # Hz
SPLITS = {"train": (0, 800), "val": (800, 900), "test": (900, 1000)}  # content-hash buckets of 1000
COUNTS = {0: (1, 1), 1: (1, 3), 2: (2, 4), 3: (3, 5)}  # shapes / beeps per scene, by difficulty
GAP = 2  # pixels of background between any two shapes


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: int  # side of the bounding box in pixels
    x: int  # top-left corner
    y: int


@dataclass(frozen=True)
class Tone:
    pitch: str  # "low" or "high"
    frequency: float  # Hz
    start: float  # seconds
    duration: float  # seconds
    amplitude: float


@dataclass(frozen=True)
class Spec:
    """Everything about a record except the rendered media."""

    id: str
    difficulty: int
    template: str
    shapes: tuple[Shape, ...]  # empty: no image
    tones: tuple[Tone, ...]  # empty: no audio
    question: str
    reasoning: str
    answer: str
    wrong_answer: str  # a plausible mistake, for preference pairs

    @property
    def caption(self) -> str:
        return " ".join(text for text in (self.image_caption, self.audio_caption) if text)

    @property
    def image_caption(self) -> Optional[str]:
        """What the image alone shows ("An image of 2 red circles and 1 blue square."); None without one."""
        return _image_caption(self.shapes) if self.shapes else None

    @property
    def audio_caption(self) -> Optional[str]:
        """What the sound alone holds ("A sound of 2 beeps: low, high."); None without one."""
        return _audio_caption(self.tones) if self.tones else None

    @property
    def image_negatives(self) -> list[str]:
        """The caption made wrong about the image in one detail, for `ContrastiveModule(hard_negatives=True)`
        (NegCLIP): the first shape's kind moved one along KINDS, the last shape's two along (one shape: both
        changes on it), the middle shape's colour one along COLOURS. Against the other records' captions
        alone, colours and counts tell the captions apart and the kinds go unlearned; these make the kinds
        matter to the loss (what they did: README)."""
        if not self.shapes:
            return []
        n = len(self.shapes)
        changes = [(0, "kind", 1), (n - 1, "kind", 2), (n // 2, "colour", 1)]
        if n == 1:
            changes = [(0, "kind", 1), (0, "kind", 2), (0, "colour", 1)]
        audio = [self.audio_caption] if self.tones else []
        negatives = []
        for index, field, step in changes:
            values = KINDS if field == "kind" else tuple(COLOURS)
            shape = self.shapes[index]
            other = values[(values.index(getattr(shape, field)) + step) % len(values)]
            shapes = self.shapes[:index] + (dataclasses.replace(shape, **{field: other}),) + self.shapes[index + 1:]
            negatives.append(" ".join([_image_caption(shapes)] + audio))
        return negatives

    @property
    def regions(self) -> list[dict]:
        """Each shape's box (x0, y0, x1, y1; x1, y1 exclusive) and its name, "a red circle": what
        `ContrastiveModule(regions=w)` aligns the patch token at the box's centre with."""
        return [{"box": [s.x, s.y, s.x + s.size, s.y + s.size], "text": f"a {s.colour} {s.kind}"}
                for s in self.shapes]

    @property
    def wrong_reasoning(self) -> str:
        """The careless reasoning of the rejected response in a preference pair."""
        return f"I guess. The answer is {self.wrong_answer}."


@dataclass(frozen=True)
class Synth:
    """The generator of one split: `spec(i)` is cheap text, `record(i)` renders media."""

    seed: int = 0
    split: str = "train"
    difficulty: Optional[int] = None  # 1..3; None mixes all three; 0: one shape or one beep, named (a
    # perception curriculum: each caption names one shape's colour and kind, never part of the mix)
    image_size: int = 32

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {self.split!r}")
        if self.difficulty not in (None, 0, 1, 2, 3):
            raise ValueError(f"difficulty: expected 0, 1, 2, 3 or None, got {self.difficulty!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size: must be at least 32 pixels, got {self.image_size}")

    def spec(self, index: int) -> Spec:
        for attempt in range(10_000):
            rng = np.random.default_rng([self.seed, list(SPLITS).index(self.split), index, attempt])
            spec = _sample(rng, self.difficulty, self.image_size, f"synth-{self.split}-{self.seed}-{index}")
            if spec is not None and split_of(spec) == self.split:
                return spec
        raise RuntimeError(f"no {self.split} scene found for index {index}")

    def record(self, index: int) -> dict:
        """A manifest-shaped record with the image as PIL and the audio as float32 at SAMPLE_RATE."""
        spec = self.spec(index)
        return {
            "id": spec.id, "question": spec.question, "reasoning": spec.reasoning, "answer": spec.answer,
            "caption": spec.caption, "image_caption": spec.image_caption, "audio_caption": spec.audio_caption,
            "difficulty": spec.difficulty, "image_negatives": spec.image_negatives or None,
            "regions": spec.regions or None,
            "chosen": format_response(spec.reasoning, spec.answer),
            "rejected": format_response(spec.wrong_reasoning, spec.wrong_answer),
            "image": render_image(spec.shapes, self.image_size) if spec.shapes else None,
            "audio": render_audio(spec.tones) if spec.tones else None,
            "sample_rate": SAMPLE_RATE,
        }


def image_size_for(config) -> int:
    """The side the scenes are drawn at for a model (an `mmr1.config.Config`): its image encoder's input,
    else the generator's default."""
    return config.vision.image_size if config.vision is not None else Synth.image_size


def split_of(spec: Spec) -> str:
    """The split a scene+question belongs to, from its content hash."""
    content = json.dumps([dataclasses.asdict(s) for s in spec.shapes] + [dataclasses.asdict(t) for t in spec.tones]
                         + [spec.question], sort_keys=True)
    bucket = int(hashlib.sha256(content.encode()).hexdigest()[:8], 16) % 1000
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= bucket < hi)


# ---- rendering ----------------------------------------------------------------------
def render_image(shapes: tuple[Shape, ...], image_size: int) -> Image.Image:
    """Shapes on black, no anti-aliasing, so every shape is one solid colour region."""
    image = Image.new("RGB", (image_size, image_size), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for s in shapes:
        box = [s.x, s.y, s.x + s.size - 1, s.y + s.size - 1]
        colour = COLOURS[s.colour]
        if s.kind == "circle":
            draw.ellipse(box, fill=colour)
        elif s.kind == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=colour)
    return image


def render_audio(tones: tuple[Tone, ...], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Sine beeps with 5 ms ramps and 0.1 s of silence after the last one; [S] float32."""
    end = tones[-1].start + tones[-1].duration + 0.1
    wave = np.zeros(int(round(end * sample_rate)), dtype=np.float32)
    ramp = 0.005 * sample_rate
    for tone in tones:
        first, n = int(round(tone.start * sample_rate)), int(round(tone.duration * sample_rate))
        i = np.arange(n)
        envelope = np.minimum(1.0, np.minimum(i, n - 1 - i) / ramp)
        wave[first:first + n] += tone.amplitude * envelope * np.sin(2 * np.pi * tone.frequency * i / sample_rate)
    return wave


# ---- sampling -----------------------------------------------------------------------
def _sample(rng: np.random.Generator, difficulty: Optional[int], image_size: int, record_id: str) -> Optional[Spec]:
    level = int(rng.integers(1, 4)) if difficulty is None else difficulty
    name, needs_image, needs_audio, ask = TEMPLATES[level][int(rng.integers(len(TEMPLATES[level])))]
    lo, hi = COUNTS[level]
    shapes = _shapes(rng, int(rng.integers(lo, hi + 1)), image_size, unique_largest=name == "largest") \
        if needs_image else ()
    if shapes is None:
        return None
    tones = _tones(rng, int(rng.integers(lo, hi + 1))) if needs_audio else ()
    question, reasoning, answer, wrong = ask(rng, shapes, tones)
    return Spec(record_id, level, name, shapes, tones, question, reasoning, answer, wrong)


def _shapes(rng: np.random.Generator, n: int, image_size: int, unique_largest: bool) -> Optional[tuple[Shape, ...]]:
    """n non-touching shapes from left to right (by the left edge, then the top), or None when they did not
    fit (the caller draws again). The order is the image's, so the reasoning that lists them can be learned
    from the pixels; in drawing order it could not."""
    lo, hi = round(0.2 * image_size), round(0.3 * image_size)
    sizes = rng.integers(lo, hi + 1, size=n)
    if unique_largest:
        sizes[int(rng.integers(n))] = round(0.42 * image_size)
    placed: list[Shape] = []
    for size in sizes.tolist():
        for _ in range(50):
            x, y = (int(v) for v in rng.integers(1, image_size - size, size=2))
            if all(_apart(x, y, size, other) for other in placed):
                kind, colour = KINDS[int(rng.integers(len(KINDS)))], list(COLOURS)[int(rng.integers(len(COLOURS)))]
                placed.append(Shape(kind, colour, size, x, y))
                break
        else:
            return None
    return tuple(sorted(placed, key=lambda s: (s.x, s.y)))


def _apart(x: int, y: int, size: int, other: Shape) -> bool:
    return (x + size + GAP <= other.x or other.x + other.size + GAP <= x
            or y + size + GAP <= other.y or other.y + other.size + GAP <= y)


def _tones(rng: np.random.Generator, n: int) -> tuple[Tone, ...]:
    """n beeps of 0.12-0.18 s with 0.10-0.16 s gaps; 5 beeps last under 2 s."""
    tones, start = [], 0.1
    for _ in range(n):
        pitch = ("low", "high")[int(rng.integers(2))]
        frequency = PITCHES[pitch][int(rng.integers(3))]
        duration = round(float(rng.uniform(0.12, 0.18)), 3)
        tones.append(Tone(pitch, frequency, round(start, 3), duration, round(float(rng.uniform(0.3, 0.6)), 2)))
        start += duration + float(rng.uniform(0.10, 0.16))
    return tuple(tones)


# ---- words ----------------------------------------------------------------------------
def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _image_caption(shapes: tuple[Shape, ...]) -> str:
    groups: dict[tuple[str, str], int] = {}
    for s in shapes:
        groups[(s.colour, s.kind)] = groups.get((s.colour, s.kind), 0) + 1
    return f"An image of {_listing([_plural(n, f'{c} {k}') for (c, k), n in groups.items()])}."


def _audio_caption(tones: tuple[Tone, ...]) -> str:
    return f"A sound of {_plural(len(tones), 'beep')}: {', '.join(t.pitch for t in tones)}."


def _tallied(items: list[str], matches: list[bool], label: str) -> list[str]:
    """Each matching item followed by the running count, "low (2 low)": a count the model builds one
    increment at a time while it lists, instead of counting words in its listing afterwards."""
    out, k = [], 0
    for item, match in zip(items, matches):
        k += match
        out.append(f"{item} ({k} {label})" if match else item)
    return out


def _seen(shapes: tuple[Shape, ...], tally: Optional[tuple[Callable[[Shape], bool], str]] = None) -> str:
    """ "I see a red circle and a blue square.", with the running count of the shapes `tally` picks."""
    items = [f"a {s.colour} {s.kind}" for s in shapes]
    return f"I see {_listing(_tallied(items, [tally[0](s) for s in shapes], tally[1]) if tally else items)}."


def _heard(tones: tuple[Tone, ...], tally: Optional[str] = None) -> str:
    """ "I hear 2 beeps: low, high.", with the running count of the beeps of pitch `tally`."""
    items = [t.pitch for t in tones]
    if tally:
        items = _tallied(items, [t.pitch == tally for t in tones], tally)
    return f"I hear {_plural(len(tones), 'beep')}: {', '.join(items)}."


def _other(rng: np.random.Generator, options, value: str) -> str:
    """One of `options` other than `value`, uniformly."""
    others = [option for option in options if option != value]
    return others[int(rng.integers(len(others)))]


def _off_by_one(rng: np.random.Generator, n: int) -> str:
    return str(n + 1 if n == 0 or rng.integers(2) else n - 1)


def _pick(rng: np.random.Generator, options: tuple[str, ...], present: list[str]) -> str:
    """Mostly something present, sometimes anything (so 0 is a possible answer)."""
    return present[int(rng.integers(len(present)))] if rng.random() < 0.75 else options[int(rng.integers(len(options)))]


# ---- question templates: (rng, shapes, tones) -> (question, reasoning, answer, wrong answer)
def _name_kind(rng, shapes, tones):
    (shape,) = shapes
    return "What shape is in the image?", f"{_seen(shapes)} It is a {shape.kind}.", shape.kind, \
        _other(rng, KINDS, shape.kind)


def _name_colour(rng, shapes, tones):
    (shape,) = shapes
    return "What colour is the shape?", f"{_seen(shapes)} It is {shape.colour}.", shape.colour, \
        _other(rng, COLOURS, shape.colour)


def _name_pitch(rng, shapes, tones):
    (tone,) = tones
    return "Is the beep low or high?", f"{_heard(tones)} It is {tone.pitch}.", tone.pitch, \
        "high" if tone.pitch == "low" else "low"


def _count_shapes(rng, shapes, tones):
    n = len(shapes)
    return "How many shapes are in the image?", f"{_seen(shapes)} That is {_plural(n, 'shape')}.", str(n), \
        _off_by_one(rng, n)


def _count_beeps(rng, shapes, tones):
    n = len(tones)
    return "How many beeps are in the sound?", f"{_heard(tones)} That is {_plural(n, 'beep')}.", str(n), \
        _off_by_one(rng, n)


def _count_colour(rng, shapes, tones):
    colour = _pick(rng, tuple(COLOURS), [s.colour for s in shapes])
    n, tally = sum(s.colour == colour for s in shapes), (lambda s: s.colour == colour, colour)
    return f"How many {colour} shapes are in the image?", \
        f"{_seen(shapes, tally)} {_plural(n, 'shape')} {'is' if n == 1 else 'are'} {colour}.", str(n), \
        _off_by_one(rng, n)


def _count_kind(rng, shapes, tones):
    kind = _pick(rng, KINDS, [s.kind for s in shapes])
    n, tally = sum(s.kind == kind for s in shapes), (lambda s: s.kind == kind, kind)
    return f"How many {kind}s are in the image?", f"{_seen(shapes, tally)} That is {_plural(n, kind)}.", str(n), \
        _off_by_one(rng, n)


def _count_pitch(rng, shapes, tones):
    pitch = ("low", "high")[int(rng.integers(2))]
    n = sum(t.pitch == pitch for t in tones)
    return f"How many {pitch} beeps are in the sound?", \
        f"{_heard(tones, pitch)} {_plural(n, 'beep')} {'is' if n == 1 else 'are'} {pitch}.", str(n), \
        _off_by_one(rng, n)


def _largest(rng, shapes, tones):
    big = max(shapes, key=lambda s: s.size)
    return "What colour is the largest shape?", \
        f"{_seen(shapes)} The largest is the {big.colour} {big.kind}, so it is {big.colour}.", big.colour, \
        _other(rng, COLOURS, big.colour)


def _add(rng, shapes, tones):
    a, b = len(shapes), len(tones)
    return "How many shapes in the image plus beeps in the sound?", \
        f"I count {_plural(a, 'shape')} in the image. I hear {_plural(b, 'beep')}. {a} + {b} = {a + b}.", \
        str(a + b), _off_by_one(rng, a + b)


def _compare(rng, shapes, tones):
    a, b = len(shapes), len(tones)
    sign, answer = (">", "yes") if a > b else ("=", "no") if a == b else ("<", "no")
    return "Are there more shapes than beeps?", \
        f"I count {_plural(a, 'shape')} in the image. I hear {_plural(b, 'beep')}. {a} {sign} {b}, so {answer}.", \
        answer, "no" if answer == "yes" else "yes"


def _add_filtered(rng, shapes, tones):
    colour = _pick(rng, tuple(COLOURS), [s.colour for s in shapes])
    pitch = ("low", "high")[int(rng.integers(2))]
    a, b = sum(s.colour == colour for s in shapes), sum(t.pitch == pitch for t in tones)
    tally = (lambda s: s.colour == colour, colour)
    return f"How many {colour} shapes plus {pitch} beeps are there?", \
        f"{_seen(shapes, tally)} {_heard(tones, pitch)} {a} {colour}, {b} {pitch}. {a} + {b} = {a + b}.", \
        str(a + b), _off_by_one(rng, a + b)


def _compare_filtered(rng, shapes, tones):
    kind = _pick(rng, KINDS, [s.kind for s in shapes])
    pitch = ("low", "high")[int(rng.integers(2))]
    a, b = sum(s.kind == kind for s in shapes), sum(t.pitch == pitch for t in tones)
    sign, answer = (">", "yes") if a > b else ("=", "no") if a == b else ("<", "no")
    tally = (lambda s: s.kind == kind, kind)
    return f"Are there more {kind}s than {pitch} beeps?", \
        f"{_seen(shapes, tally)} {_heard(tones, pitch)} {_plural(a, kind)}, {_plural(b, pitch + ' beep')}. " \
        f"{a} {sign} {b}, so {answer}.", answer, "no" if answer == "yes" else "yes"


def _multiply(rng, shapes, tones):
    a, b = len(shapes), len(tones)
    return "What is the number of shapes times the number of beeps?", \
        f"I count {_plural(a, 'shape')} in the image. I hear {_plural(b, 'beep')}. {a} x {b} = {a * b}.", \
        str(a * b), str(a * b + b)


Template = tuple[str, bool, bool, Callable]  # name, needs image, needs audio, ask
TEMPLATES: dict[int, list[Template]] = {
    0: [("name_kind", True, False, _name_kind), ("name_colour", True, False, _name_colour),
        ("name_pitch", False, True, _name_pitch)],
    1: [("count_shapes", True, False, _count_shapes), ("count_beeps", False, True, _count_beeps)],
    2: [("count_colour", True, False, _count_colour), ("count_kind", True, False, _count_kind),
        ("count_pitch", False, True, _count_pitch), ("largest", True, False, _largest),
        ("add", True, True, _add), ("compare", True, True, _compare)],
    3: [("add_filtered", True, True, _add_filtered), ("compare_filtered", True, True, _compare_filtered),
        ("multiply", True, True, _multiply)],
}


# ---- corpus and files -----------------------------------------------------------------
def text_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """The text of n training records (prompts, reasoning, answers, captions) for tokenizer training."""
    synth = Synth(seed=seed)
    texts = []
    for i in range(n):
        spec = synth.spec(i)
        texts += [spec.question + INSTRUCTION, spec.reasoning, spec.answer, spec.caption, spec.wrong_reasoning]
    return texts


def write_text(path: str | Path, n: int, seed: int = 0, split: str = "train", difficulty: Optional[int] = None,
               image_size: int = 32) -> Path:
    """Write the text of n records (id, question, reasoning, answer; no media) as a JSONL corpus for
    `TextDataModule`: the records `write` (and the data modules, at the model's image size) give, without
    rendering their media."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    synth = Synth(seed, split, difficulty, image_size)
    with path.open("w") as f:
        for i in range(n):
            spec = synth.spec(i)
            f.write(json.dumps({"id": spec.id, "question": spec.question, "reasoning": spec.reasoning,
                                "answer": spec.answer}) + "\n")
    return path


def write(out_dir: str | Path, n: int, seed: int = 0, split: str = "train", difficulty: Optional[int] = None,
          image_size: int = 32) -> Path:
    """Write n records as `{split}.jsonl` + `images/*.png` + `audio/*.wav`; returns the manifest path."""
    import soundfile

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "audio").mkdir(exist_ok=True)
    synth = Synth(seed, split, difficulty, image_size)
    manifest = out_dir / f"{split}.jsonl"
    with manifest.open("w") as f:
        for i in range(n):
            record = synth.record(i)
            image, audio = record.pop("image"), record.pop("audio")
            del record["sample_rate"]
            if image is not None:
                record["image"] = f"images/{record['id']}.png"
                image.save(out_dir / record["image"])
            if audio is not None:
                record["audio"] = f"audio/{record['id']}.wav"
                soundfile.write(out_dir / record["audio"], audio, SAMPLE_RATE)
            f.write(json.dumps(record) + "\n")
    return manifest
