"""benchmarks/prefix_probe.py: the digit a vocabulary prefix names, per medium, against each record's own."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from prefix_probe import digit_tokens, named_digits  # noqa: E402

from mmr1.checkpoint import load_model  # noqa: E402
from mmr1.cli import main  # noqa: E402
from mmr1.datamodules.digits import perceived_digits  # noqa: E402


@pytest.mark.needs_data
def test_a_prefix_that_always_names_seven_is_right_on_the_records_showing_seven(tmp_path, shared_data):
    assert main(["data", "digits", "--out", str(tmp_path / "d"), "--fsdd", str(shared_data / "fsdd"),
                 "--train", "16", "--test", "24"]) == 0
    assert main(["init", "--preset", "tiny", "--overrides", '{"fusion": {"vocab_prefix": true}}',
                 "--out", str(tmp_path / "m")]) == 0
    model, tokenizer = load_model(tmp_path / "m")
    seven = int(digit_tokens(tokenizer)[7])
    with torch.no_grad():  # every prefix position: all its mass on the token "7"
        model.prefix_proj.weight.zero_()
        model.prefix_proj.bias.fill_(-30.0)[seven] = 30.0
    manifest = tmp_path / "d" / "test.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    said = [perceived_digits(r["reasoning"]) for r in records]
    assert 0 < sum(7 in pair for pair in said) < 24  # some records show or say 7, others do not
    scores = named_digits(model, tokenizer, manifest, batch=10)
    assert scores == {"records": 24, "image_named": sum(i == 7 for i, _ in said) / 24,
                      "audio_named": sum(a == 7 for _, a in said) / 24}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prefix_probe.py"), str(tmp_path / "m"),
                           str(manifest), "--limit", "8"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]).keys() == {"records", "image_named", "audio_named"}


def test_a_record_without_both_digits_is_refused_by_name(tmp_path):
    from prefix_probe import digits_of
    with pytest.raises(ValueError, match="record r7 has no reasoning naming both digits"):
        digits_of({"id": "r7", "reasoning": "The picture shows 7."}, tmp_path / "m.jsonl")
