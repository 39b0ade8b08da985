"""benchmarks/alignment_selection.py: the selection copy of a digits folder, and a short run end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from alignment_selection import selection_folder  # noqa: E402

from mmr1.datamodules import digits  # noqa: E402
from mmr1.datamodules.manifest import read_manifest  # noqa: E402


@pytest.mark.needs_data
def test_selection_folder_moves_a_block_of_training_images_to_val(tmp_path, shared_data):
    data = tmp_path / "task" / "data"
    digits.write(data, shared_data / "fsdd", test_speaker="george", sizes={"train": 200, "val": 8, "test": 12})
    sizes = selection_folder(data, tmp_path / "selection", 0, 250)

    train, _ = read_manifest(tmp_path / "selection" / "train.jsonl", "sft")  # every media path resolves
    val, _ = read_manifest(tmp_path / "selection" / "val.jsonl", "sft")
    test, _ = read_manifest(tmp_path / "selection" / "test.jsonl", "sft")
    index = [int(Path(r["image"]).stem) for _, r in train + val]
    assert sizes == {"train": len(train), "val": len(val), "test": 12} and len(train) + len(val) == 200
    assert all(i > 250 for i in index[:len(train)]) and all(i <= 250 for i in index[len(train):]) and val
    originals = {r["id"]: r for _, r in read_manifest(data / "train.jsonl", "sft")[0]}
    for _, record in train[:5] + val[:5]:
        original = originals[record["id"]]
        for key in ("image", "audio"):
            assert (tmp_path / "selection" / record[key]).resolve() == (data / original[key]).resolve()
        assert {k: v for k, v in record.items() if k not in ("image", "audio")} == \
            {k: v for k, v in original.items() if k not in ("image", "audio")}
    assert all(r["audio"].split("_")[-2] == "george" for _, r in test)
    with pytest.raises(ValueError, match="--unseen-images 0 5000: leaves the selection train split"):
        selection_folder(data, tmp_path / "all", 0, 5000)


@pytest.mark.slow
@pytest.mark.needs_data
def test_alignment_selection_prints_both_probes(tmp_path, shared_data):
    done = subprocess.run(
        [sys.executable, "benchmarks/alignment_selection.py", "--out", str(tmp_path), "--fsdd",
         str(shared_data / "fsdd"), "--train", "160", "--test", "16", "--steps", "2", "--seed", "1",
         "--val-every", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 2 and result["seed"] == 1 and result["speaker"] == "george"
    assert 0 <= result["unseen_images_probe"] <= 1 and 0 <= result["selection_voice_probe"] <= 1
    assert "--seed_everything 1" in done.stdout and "$ mmr1 data digits" in done.stdout
