"""The generator's answers, checked by a solver that only looks at pixels and samples."""

import collections
import hashlib
import json
import re

import numpy as np
import pytest
import soundfile
from PIL import Image
from scipy import ndimage

from mmr1.datamodules.synth import COLOURS, SAMPLE_RATE, Synth, write, write_text
from mmr1.datamodules.text import render_record

PALETTE = {"black": (0, 0, 0), **COLOURS}


def see(image: Image.Image) -> list[dict]:
    """Connected single-colour regions, left to right: colour, kind (from how much of its box it fills), box
    side, left and top edges."""
    pixels = np.asarray(image.convert("RGB"), dtype=float)  # [H, W, 3]
    names = list(PALETTE)
    distance = ((pixels[:, :, None, :] - np.array(list(PALETTE.values()))) ** 2).sum(-1)  # [H, W, colours]
    nearest = distance.argmin(-1)
    found = []
    for c, name in enumerate(names[1:], start=1):
        labels, n = ndimage.label(nearest == c, structure=np.ones((3, 3)))
        for box in ndimage.find_objects(labels):
            h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
            fill = (nearest[box] == c).sum() / (h * w)
            kind = "square" if fill > 0.95 else "circle" if fill > 0.62 else "triangle"
            found.append({"colour": name, "kind": kind, "side": max(h, w), "left": box[1].start,
                          "top": box[0].start})
    return sorted(found, key=lambda s: (s["left"], s["top"]))


def hear(audio: np.ndarray, sample_rate: int) -> list[str]:
    """Beeps from a 10 ms energy envelope; each one low or high from its spectral peak."""
    frame = sample_rate // 100
    energy = np.sqrt((audio[: len(audio) // frame * frame].reshape(-1, frame) ** 2).mean(1))
    active = np.concatenate([[0], (energy > 0.05).astype(int), [0]])
    starts, ends = np.flatnonzero(np.diff(active) == 1), np.flatnonzero(np.diff(active) == -1)
    pitches = []
    for s, e in zip(starts, ends):
        chunk = audio[s * frame:e * frame]
        peak = np.fft.rfftfreq(len(chunk), 1 / sample_rate)[np.abs(np.fft.rfft(chunk)).argmax()]
        pitches.append("low" if peak < 800 else "high")
    return pitches


def solve(question: str, shapes: list[dict], beeps: list[str]) -> str:
    def compare(a, b):
        return "yes" if a > b else "no"

    rules = [
        (r"How many shapes are in the image\?", lambda: len(shapes)),
        (r"How many beeps are in the sound\?", lambda: len(beeps)),
        (r"How many (\w+) shapes are in the image\?", lambda c: sum(s["colour"] == c for s in shapes)),
        (r"How many (\w+)s are in the image\?", lambda k: sum(s["kind"] == k for s in shapes)),
        (r"How many (\w+) beeps are in the sound\?", lambda p: beeps.count(p)),
        (r"What colour is the largest shape\?", lambda: max(shapes, key=lambda s: s["side"])["colour"]),
        (r"How many shapes in the image plus beeps in the sound\?", lambda: len(shapes) + len(beeps)),
        (r"Are there more shapes than beeps\?", lambda: compare(len(shapes), len(beeps))),
        (r"How many (\w+) shapes plus (\w+) beeps are there\?",
         lambda c, p: sum(s["colour"] == c for s in shapes) + beeps.count(p)),
        (r"Are there more (\w+)s than (\w+) beeps\?",
         lambda k, p: compare(sum(s["kind"] == k for s in shapes), beeps.count(p))),
        (r"What is the number of shapes times the number of beeps\?", lambda: len(shapes) * len(beeps)),
        (r"What shape is in the image\?", lambda: shapes[0]["kind"]),
        (r"What colour is the shape\?", lambda: shapes[0]["colour"]),
        (r"Is the beep low or high\?", lambda: beeps[0]),
    ]
    for pattern, rule in rules:
        match = re.fullmatch(pattern, question)
        if match:
            return str(rule(*match.groups()))
    raise AssertionError(f"no rule for {question!r}")


@pytest.mark.parametrize("difficulty, image_size", [(0, 32), (1, 32), (2, 32), (3, 32), (None, 64)])
def test_answers_are_right(difficulty, image_size):
    synth = Synth(seed=3, difficulty=difficulty, image_size=image_size)
    templates = set()
    for i in range(60):
        record = synth.record(i)
        shapes = see(record["image"]) if record["image"] is not None else []
        beeps = hear(record["audio"], record["sample_rate"]) if record["audio"] is not None else []
        assert solve(record["question"], shapes, beeps) == record["answer"], record
        assert record["image"] is None or record["image"].size == (image_size, image_size)
        assert record["audio"] is None or len(record["audio"]) <= 2 * SAMPLE_RATE
        assert record["answer"] in record["reasoning"] and record["answer"] != rejected_answer(record)
        templates.add(synth.spec(i).template)
    assert len(templates) >= (2 if difficulty == 1 else 3)


def test_the_perception_curriculum_names_one_item_and_stays_out_of_the_mix():
    """Difficulty 0 shows one shape (or plays one beep) and names it; the mixed splits never draw it."""
    curriculum = Synth(seed=2, difficulty=0)
    for i in range(40):
        record = curriculum.record(i)
        shapes = see(record["image"]) if record["image"] is not None else []
        beeps = hear(record["audio"], record["sample_rate"]) if record["audio"] is not None else []
        assert len(shapes) + len(beeps) == 1 and record["difficulty"] == 0
        named = f"{shapes[0]['colour']} {shapes[0]['kind']}" if shapes else f"beep: {beeps[0]}"
        assert named in record["caption"] and named in record["reasoning"]
    assert all(Synth(seed=2).spec(i).difficulty > 0 for i in range(300))


def test_the_reasoning_lists_the_shapes_left_to_right():
    """The listing is learnable from the pixels only if its order is the image's, not the drawing order."""
    synth, listed = Synth(seed=5, difficulty=3), 0
    for i in range(40):
        record = synth.record(i)
        seen = re.match(r"I see (.*?)\.", record["reasoning"])
        if seen is None:
            continue
        names = [f"a {s['colour']} {s['kind']}" for s in see(record["image"])]
        expected = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        assert re.sub(r" \(\d+ \w+\)", "", seen.group(1)) == expected, record["id"]  # without running counts
        listed += len(names) > 2
    assert listed >= 10


@pytest.mark.parametrize("difficulty", [2, 3])
def test_filtered_counts_are_kept_running_beside_the_listing(difficulty):
    """ "low (1 low), high, low (2 low)": each label's running count goes 1, 2, ... up to its count."""
    synth, tallied = Synth(seed=2, difficulty=difficulty), 0
    for i in range(80):
        record = synth.record(i)
        beeps = hear(record["audio"], record["sample_rate"]) if record["audio"] is not None else []
        shapes = see(record["image"]) if record["image"] is not None else []
        for label in {label for _, label in re.findall(r"\((\d+) (\w+)\)", record["reasoning"])}:
            counts = [int(k) for k, name in re.findall(r"\((\d+) (\w+)\)", record["reasoning"]) if name == label]
            present = beeps.count(label) if label in ("low", "high") else \
                sum(label in (s["colour"], s["kind"]) for s in shapes)
            assert counts == list(range(1, present + 1)), record["reasoning"]
            tallied += 1
        question = record["question"]
        if re.search(r"How many (red|green|blue|yellow|low|high) |(many|more) (circle|square|triangle)s", question):
            assert "(" in record["reasoning"] or "0" in record["reasoning"], record["reasoning"]
    assert tallied >= 10


def rejected_answer(record):
    return re.search(r"<answer>(.*)</answer>", record["rejected"]).group(1)


def test_deterministic_per_seed_and_index():
    a, b = Synth(seed=7).record(5), Synth(seed=7).record(5)
    assert a["question"] == b["question"] and a["answer"] == b["answer"]
    assert (a["image"] is None) == (b["image"] is None) and (a["audio"] is None) == (b["audio"] is None)
    if a["image"] is not None:
        assert a["image"].tobytes() == b["image"].tobytes()
    if a["audio"] is not None:
        assert np.array_equal(a["audio"], b["audio"])
    assert [Synth(seed=7).spec(i) for i in range(20)] != [Synth(seed=8).spec(i) for i in range(20)]


def content_hash(record) -> str:
    image = record["image"].tobytes() if record["image"] is not None else b""
    audio = record["audio"].tobytes() if record["audio"] is not None else b""
    return hashlib.sha256(image + audio + record["question"].encode()).hexdigest()


def test_splits_are_disjoint():
    hashes = {split: {content_hash(Synth(seed=0, split=split, difficulty=1).record(i)) for i in range(300)}
              for split in ("train", "val", "test")}
    assert all(len(h) > 250 for h in hashes.values())  # easy scenes still vary
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_write_manifest(tmp_path):
    manifest = write(tmp_path, n=12, seed=1, split="val", difficulty=3)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) == 12 and manifest.name == "val.jsonl"
    for i, record in enumerate(records):
        expected = Synth(seed=1, split="val", difficulty=3).record(i)
        assert record["answer"] == expected["answer"] and record["difficulty"] == 3
        assert np.array_equal(np.asarray(Image.open(tmp_path / record["image"])), np.asarray(expected["image"]))
        audio, rate = soundfile.read(tmp_path / record["audio"], dtype="float32")
        assert rate == SAMPLE_RATE and np.abs(audio - expected["audio"]).max() < 1e-3
        assert {"question", "reasoning", "caption", "chosen", "rejected", "id"} <= set(record)


def test_write_text_is_the_records_text_without_media(tmp_path):
    """The corpus of a pipeline `clm` stage: the same records the data modules render, at the model's image size."""
    corpus = write_text(tmp_path / "deep" / "text.jsonl", n=20, seed=2, image_size=48)
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    assert len(records) == 20
    for i, record in enumerate(records):
        expected = Synth(seed=2, split="train", image_size=48).spec(i)
        assert record == {"id": expected.id, "question": expected.question, "reasoning": expected.reasoning,
                          "answer": expected.answer}
    assert render_record(records[0]).endswith(f"<answer>{records[0]['answer']}</answer></s>")


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        Synth(split="dev")
    with pytest.raises(ValueError, match="difficulty"):
        Synth(difficulty=4)


def caption_shapes(caption: str) -> collections.Counter:
    """{(colour, kind): n} of a caption's image part, "An image of 2 red circles and 1 blue square."."""
    listing = re.match(r"An image of (.*?)\.", caption).group(1)
    found = re.findall(r"(\d+) (\w+) (circle|square|triangle)s?", listing)
    return collections.Counter({(colour, kind): int(n) for n, colour, kind in found})


def test_image_negatives_are_the_caption_wrong_about_one_shape():
    """Each hard negative: the pixels' shapes with exactly one shape's kind or colour changed, the sound's part
    untouched; at least two change a kind (what alignment against other records' captions leaves out). Each
    medium's own caption says what its pixels (or samples) hold, and the caption is the two."""
    synth, checked = Synth(seed=4), 0
    for i in range(60):
        record = synth.record(i)
        if record["image"] is None:
            assert record["image_negatives"] is None
            continue
        seen = collections.Counter((s["colour"], s["kind"]) for s in see(record["image"]))
        assert caption_shapes(record["image_caption"]) == caption_shapes(record["caption"]) == seen
        assert record["caption"] == " ".join(t for t in (record["image_caption"], record["audio_caption"]) if t)
        assert (record["audio"] is None) == (record["audio_caption"] is None)
        sound = record["caption"].partition(". ")[2]
        kinds_changed = 0
        for negative in record["image_negatives"]:
            assert negative != record["caption"] and negative.partition(". ")[2] == sound
            removed, added = seen - caption_shapes(negative), caption_shapes(negative) - seen
            assert sum(removed.values()) == sum(added.values()) == 1, negative
            (old,), (new,) = removed, added
            assert (old[0] == new[0]) != (old[1] == new[1]), negative  # one attribute changed, not both
            kinds_changed += old[0] == new[0]
        assert kinds_changed >= 2
        checked += 1
    assert checked >= 30
