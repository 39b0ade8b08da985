import json
import logging

import numpy as np
import pytest
import soundfile
from PIL import Image
from torch.utils.data import DataLoader

from mmr1.config import Config
from mmr1.datamodules.collate import Collator
from mmr1.datamodules.manifest import ManifestDataset, read_manifest
from mmr1.datamodules.records import RecordProcessor
from mmr1.datamodules.tokenizer import Tokenizer

PROCESSORS = RecordProcessor.from_config(Config.from_name("tiny"))


def write_manifest(folder, records) -> str:
    path = folder / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def media(tmp_path):
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "red.png")
    soundfile.write(tmp_path / "beep.wav", np.zeros(4000, np.float32), 8000)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return tmp_path


def good(**fields):
    return {"image": "red.png", "audio": "beep.wav", "question": "What colour?", "answer": "red", **fields}


@pytest.mark.parametrize("bad, where", [
    ("{not json", "3: record: not valid JSON"),
    (good(image="missing.png"), "3: image: file not found"),
    (good(question="  "), "3: question: empty"),
    (good(answer=None), "3: answer: missing"),
    (good(choices="a,b"), "3: choices"),
    ('["a list"]', "3: record: expected a JSON object"),
    (good(caption="a red square", image_negatives="a red circle"), "3: image_negatives: expected a list"),
    (good(caption="a red square", image_negatives=["a red square"]), "3: image_negatives: .* own caption"),
    (good(audio_negatives=["two beeps"]), "3: audio_negatives: a record with negatives needs the caption"),
    (good(reasoning="I hear 3.", audio_negatives=["I hear 3."]), "3: audio_negatives: .* own caption"),
    (good(image_caption=7), "3: image_caption: expected a string"),
    (good(audio_caption=" "), "3: audio_caption: empty"),
])
def test_bad_lines_fail_up_front_with_path_line_and_field(media, bad, where):
    path = write_manifest(media, [good(), good(), bad])
    with pytest.raises(ValueError, match=f"data.jsonl:{where}"):
        ManifestDataset(path, PROCESSORS, "sft")


def test_a_missing_answer_is_fine_where_the_objective_needs_none(media):
    path = write_manifest(media, [good(answer=None, caption="a red square"), {"caption": "quiet", "audio": "beep.wav"}])
    assert len(ManifestDataset(path, PROCESSORS, "paired")) == 2
    path = write_manifest(media, [good(), {"audio": "beep.wav"}])
    with pytest.raises(ValueError, match="data.jsonl:2: caption: a 'paired' record needs two"):
        ManifestDataset(path, PROCESSORS, "paired")
    path = write_manifest(media, [{"audio": "beep.wav", "audio_caption": "one beep"}])  # its own caption is enough
    assert len(ManifestDataset(path, PROCESSORS, "paired")) == 1


def test_corrupt_file_fails_at_decode_with_the_line(media):
    path = write_manifest(media, [good(), "", good(image="corrupt.png")])
    dataset = ManifestDataset(path, PROCESSORS, "sft")
    assert dataset[0]["pixel_values"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"data.jsonl:3: image: .*corrupt.png: cannot read image"):
        dataset[1]


def test_skip_bad_records_drops_a_bad_record_and_its_neighbour_is_seen_once(media):
    records = [good(id=str(i)) for i in range(7)]
    records[1] = good(image="corrupt.png", id="1")  # decodes badly: found while iterating
    records[4] = "{broken"  # found up front
    path = write_manifest(media, records)
    dataset = ManifestDataset(path, PROCESSORS, "sft", skip_bad_records=True)
    assert len(dataset) == 6 and dataset.skipped == [(5, dataset.skipped[0][1])]
    loader = DataLoader(dataset, batch_size=2, collate_fn=Collator(Tokenizer.default(), "sft"))
    for _ in range(2):  # every epoch alike
        batches = list(loader)
        ids = [i for b in batches for i in b["ids"]]
        assert sorted(ids) == ["0", "2", "3", "5", "6"]  # "1" dropped, "2" (its neighbour) not trained twice
        assert [len(b["ids"]) for b in batches] == [1, 2, 2]  # the bad record's batch is one smaller
        reports = [r for b in batches for r in b.get("skipped", [])]
        assert len(reports) == 1 and reports[0][0] == f"{path}:2" and reports[0][1].startswith("image:")
    with pytest.raises(ValueError, match=r"data.jsonl:2: image: .*cannot read image"):
        dataset.example(1)


def test_nan_audio_and_pixels_are_bad_records_named_by_line(media):
    soundfile.write(media / "nan.wav", np.full(800, np.nan, np.float32), 8000, subtype="FLOAT")
    Image.fromarray(np.full((4, 4), np.nan, np.float32), "F").save(media / "nan.tiff")
    path = write_manifest(media, [good(), good(audio="nan.wav"), good(image="nan.tiff")])
    dataset = ManifestDataset(path, PROCESSORS, "sft")
    with pytest.raises(ValueError, match=r"data.jsonl:2: audio: .*nan.wav: samples hold NaN or Inf"):
        dataset[1]
    with pytest.raises(ValueError, match=r"data.jsonl:3: image: pixels hold NaN or Inf"):
        dataset[2]


def test_an_over_long_record_fails_as_an_item_with_its_line(media):
    collator = Collator(Tokenizer.default(), "sft", text_max_length=20)
    path = write_manifest(media, [good(), good(question="How many " + "red " * 40 + "shapes?")])
    dataset = ManifestDataset(path, PROCESSORS, "sft", encode=collator.encode)
    assert dataset[0]["question"] == "What colour?"
    with pytest.raises(ValueError, match=r"data.jsonl:2: record None: text encoder input is \d+ tokens"):
        dataset[1]


def test_unknown_fields_warn_once_with_the_closest_name_and_empty_manifests_fail(media, caplog):
    path = write_manifest(media, [good(imagee="red.png"), good(imagee="red.png", source="web")])
    with caplog.at_level(logging.WARNING):
        records, _ = read_manifest(path, "sft")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(records) == 2 and len(warnings) == 2
    assert "data.jsonl:1: unknown field 'imagee' is ignored (did you mean 'image'?)" in warnings[0]
    assert "data.jsonl:2: unknown field 'source' is ignored; known: id, image" in warnings[1]
    empty = media / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.jsonl: empty manifest"):
        read_manifest(empty, None)


def test_read_manifest_paths_are_relative_to_the_manifest(media, tmp_path):
    sub = media / "sub"
    sub.mkdir()
    path = write_manifest(sub, [good(image="../red.png", audio=str(media / "beep.wav"))])
    records, skipped = read_manifest(path, "sft")
    assert records[0][0] == 1 and not skipped


def digit_images() -> list[tuple[int, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [(int(digits.target[i]), (digits.images[i] * 255 / 16).astype(np.uint8)) for i in range(4)]


@pytest.mark.needs_data
def test_real_speech_and_handwriting_end_to_end(shared_data, tmp_path):
    """FSDD recordings (8 kHz, read in place) + sklearn digits as PNG/JPEG/16-bit/RGBA → batch."""
    recordings = sorted((shared_data / "fsdd" / "recordings").glob("*_theo_0.wav"))[:4]
    assert recordings, "no FSDD recordings"
    records, frames = [], []
    for (digit, pixels), kind in zip(digit_images(), ("png", "jpeg", "16bit", "rgba")):
        name = tmp_path / f"{digit}_{kind}.{'jpg' if kind == 'jpeg' else 'png'}"
        image = {"png": Image.fromarray(pixels), "jpeg": Image.fromarray(np.stack([pixels] * 3, -1)),
                 "16bit": Image.fromarray(pixels.astype(np.uint16) * 257),
                 "rgba": Image.fromarray(np.dstack([pixels] * 3 + [np.full_like(pixels, 255)]), "RGBA")}[kind]
        image.save(name)
        records.append({"id": name.stem, "image": name.name, "question": "Which digit is written?",
                        "answer": str(digit), "caption": f"the digit {digit}"})
    for wav in recordings:
        records.append({"id": wav.stem, "audio": str(wav), "question": "Which digit is spoken?",
                        "answer": wav.name.split("_")[0]})
        frames.append(soundfile.info(wav).frames)
    records.append({"id": "both", "image": records[0]["image"], "audio": str(recordings[0]),
                    "question": "Is the written digit the spoken one?", "answer": "no", "reasoning": "..."})
    frames.append(frames[0])
    path = write_manifest(tmp_path, records)
    dataset = ManifestDataset(path, PROCESSORS, "sft")
    batch = next(iter(DataLoader(dataset, batch_size=len(records), collate_fn=Collator(Tokenizer.default(), "sft"))))
    assert batch["image_mask"].tolist() == [True] * 4 + [False] * 4 + [True]
    assert batch["audio_lengths"].tolist() == [0] * 4 + [2 * f for f in frames]  # 8 kHz → 16 kHz
    assert batch["audio_values"].shape == (9, max(2 * f for f in frames))
    speech = batch["audio_values"][4, :batch["audio_lengths"][4]]
    original, _ = soundfile.read(recordings[0], dtype="float32")
    assert abs(speech.pow(2).mean().sqrt() / np.sqrt((original ** 2).mean()) - 1) < 0.05  # same loudness
    for row in range(4):  # every file kind decodes to a visible digit
        assert batch["pixel_values"][row].std() > 0.2
    assert batch["answers"][:4] == [str(d) for d, _ in digit_images()]
    assert batch["labels"].shape == batch["input_ids"].shape and (batch["labels"] != -100).any(dim=1).all()
