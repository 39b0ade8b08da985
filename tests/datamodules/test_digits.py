"""The real-data digits task: leave-one-speaker-out audio, index-split images, one reasoning format."""

import json
from pathlib import Path

import pytest

from mmr1.datamodules.digits import QUESTIONS, perceived_digits, reasoning, write


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
    speakers = {split: {Path(r["audio"]).name.split("_")[1] for r in rs} for split, rs in rows.items()}
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


@pytest.mark.needs_data
def test_data_digits_command_writes_the_manifests(tmp_path, shared_data, capsys):
    from mmr1.cli import main

    assert main(["data", "digits", "--out", str(tmp_path), "--fsdd", str(shared_data / "fsdd"), "--test-speaker", "theo",
                 "--train", "20", "--val", "5", "--test", "5"]) == 0
    assert "test speaker theo" in capsys.readouterr().out
    assert sum(1 for _ in (tmp_path / "train.jsonl").open()) == 20
    assert main(["data", "digits", "--out", str(tmp_path), "--fsdd", str(tmp_path / "nowhere")]) == 2
