"""The real-data digits task: leave-one-speaker-out audio, index-split images, one reasoning format."""

import json
from pathlib import Path

import pytest

from mmr1.datamodules.digits import QUESTIONS, captions, clip_speaker, negatives, perceived_digits, reasoning, write
from mmr1.datamodules.records import check_record


def test_reasoning_is_read_back_and_answers_are_exact():
    for question in QUESTIONS:
        text = reasoning(7, 3, question)
        assert perceived_digits(text) == (7, 3)
    assert [q.answer(7, 3) for q in QUESTIONS] == [10, 4, 21, 7]
    assert QUESTIONS[1].answer(2, 9) == -7
    assert perceived_digits("I cannot tell.") == (None, None) and perceived_digits(None) == (None, None)


@pytest.mark.needs_data
def test_splits_share_no_speaker_take_or_image(tmp_path, shared_data):
    fsdd = shared_data / "fsdd"
    paths = write(tmp_path, fsdd, "lucas", {"train": 300, "val": 100, "test": 100})
    rows = {split: [json.loads(line) for line in path.open()] for split, path in paths.items()}
    assert {split: len(r) for split, r in rows.items()} == {"train": 300, "val": 100, "test": 100}
    speakers = {split: {clip_speaker(r["audio"]) for r in rs} for split, rs in rows.items()}
    assert speakers["test"] == {"lucas"} and "lucas" not in speakers["train"] | speakers["val"]
    takes = {split: {int(Path(r["audio"]).stem.split("_")[2]) for r in rs} for split, rs in rows.items()}
    assert max(takes["val"]) < 5 <= min(takes["train"])
    images = {split: {r["image"] for r in rs} for split, rs in rows.items()}
    assert not images["test"] & (images["train"] | images["val"]) and not images["val"] & images["train"]
    for r in rows["test"]:
        image_digit, sound_digit = perceived_digits(r["reasoning"])
        assert Path(r["audio"]).name.startswith(f"{sound_digit}_")
        assert (tmp_path / r["image"]).is_file() and (tmp_path / r["audio"]).is_file()
    with pytest.raises(ValueError, match="test_speaker"):
        write(tmp_path, fsdd, "nobody")


def test_clip_speaker_reads_the_recording_name_and_refuses_another():
    assert clip_speaker(Path("fsdd/recordings/4_jackson_27.wav")) == "jackson"
    with pytest.raises(ValueError, match="DIGIT_SPEAKER_TAKE"):
        clip_speaker("fsdd/recordings/jackson.wav")


@pytest.mark.needs_data
def test_data_digits_command_writes_the_manifests(tmp_path, shared_data, capsys):
    from mmr1.cli import main

    assert main(["data", "digits", "--out", str(tmp_path), "--fsdd", str(shared_data / "fsdd"), "--test-speaker", "theo",
                 "--train", "20", "--val", "5", "--test", "5"]) == 0
    assert "test speaker theo" in capsys.readouterr().out
    assert sum(1 for _ in (tmp_path / "train.jsonl").open()) == 20
    record = json.loads((tmp_path / "train.jsonl").open().readline())
    question = next(q for q in QUESTIONS if q.text == record["question"])
    image, sound = perceived_digits(record["reasoning"])
    assert {key: record[key] for key in ("image_caption", "audio_caption")} == captions(image, sound)
    assert record["reasoning"].startswith(f"The picture shows {image}. The sound says {sound}. ")
    want = negatives(image, sound, question)
    assert (record["image_negatives"], record["audio_negatives"]) == (want["image_negatives"], want["audio_negatives"])
    check_record(record, "paired", tmp_path)  # the negatives are valid ones
    assert main(["data", "digits", "--out", str(tmp_path), "--fsdd", str(tmp_path / "nowhere")]) == 2


def test_negatives_change_one_medium_s_digit_and_recompute_the_rest():
    """Each image negative reads back another picture digit and the same spoken digit (and the reverse), and is
    the reasoning that digit would give, so only the one medium can tell it from the record's own."""
    for question in QUESTIONS:
        for image, sound in [(7, 3), (0, 9), (5, 5)]:
            own = reasoning(image, sound, question)
            found = negatives(image, sound, question)
            for key, which in (("image_negatives", 0), ("audio_negatives", 1)):
                digits = [perceived_digits(text) for text in found[key]]
                assert len(set(digits)) == 3 and own not in found[key]
                for text, (i, s) in zip(found[key], digits):
                    assert (i, s)[1 - which] == (image, sound)[1 - which] and (i, s)[which] != (image, sound)[which]
                    assert text == reasoning(i, s, question)
