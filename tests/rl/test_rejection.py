"""`mmr1 sample`: only well-formed responses that reach the reward are written, as SFT records."""

import json

import pytest
import torch

from mmr1.config import Config
from mmr1.datamodules.collate import pad
from mmr1.datamodules.manifest import read_manifest
from mmr1.datamodules.synth import write
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel
from mmr1.datamodules.prompt import parse_response
from mmr1.rl.rollout import Rollout
from mmr1.cli import main
from mmr1.cli.sample import parse_rewards
from mmr1.rl.rejection import rejection_sample


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return MultimodalModel(Config.from_name("tiny")).save_pretrained(tmp_path_factory.mktemp("ckpt"),
                                                                     Tokenizer.default())


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write(tmp_path_factory.mktemp("data"), 2, seed=0)


def fake_sampler(responses: list[str]):
    """A stand-in for sample_groups: every one of prompt b's samples is responses[b] (then </s>)."""
    tokenizer = Tokenizer.default()

    def sample_groups(model, batch, group_size, max_new_tokens, temperature=1.0, **options):
        rows = [tokenizer.encode(responses[b]) + [tokenizer.eos_id]
                for b in range(batch["input_ids"].shape[0]) for _ in range(group_size)]
        ids, mask = pad(rows, tokenizer.pad_id)
        return Rollout(batch["input_ids"], batch["attention_mask"].bool(), ids, mask, group_size)
    return sample_groups


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_untrained_model_keeps_nothing_malformed(checkpoint, manifest, tmp_path):
    out = tmp_path / "sft.jsonl"
    counts = rejection_sample(checkpoint, out, manifest, n=4, min_reward=0.0, rewards={"format": 1.0},
                              max_new_tokens=16, max_per_record=0)
    assert counts["records"] == 2 and counts["samples"] == 8
    kept = lines(out)
    assert len(kept) == counts["written"] <= counts["kept"]
    for record in kept:
        assert parse_response(f"<think>{record['reasoning']}</think><answer>{record['answer']}</answer>")[1]


def test_malformed_or_unreasoned_responses_are_dropped_even_at_min_reward_zero(checkpoint, manifest, tmp_path, monkeypatch):
    monkeypatch.setattr("mmr1.rl.rejection.sample_groups",
                        fake_sampler(["<think>hm</think> 3", "<think></think><answer>3</answer>"]))
    counts = rejection_sample(checkpoint, tmp_path / "sft.jsonl", manifest, n=2, min_reward=0.0)
    assert counts["kept"] == 0 and (tmp_path / "sft.jsonl").read_text() == ""


def test_only_the_correct_response_is_kept_with_its_reasoning(checkpoint, manifest, tmp_path, monkeypatch):
    records = [r for _, r in read_manifest(manifest, "rl")[0]]
    right = f"<think>I count them carefully.</think><answer>{records[0]['answer']}</answer>"
    wrong = f"<think>I guess.</think><answer>{records[1]['answer']}0</answer>"
    monkeypatch.setattr("mmr1.rl.rejection.sample_groups", fake_sampler([right, wrong]))
    out = tmp_path / "elsewhere" / "sft.jsonl"
    summary = tmp_path / "sampling.json"
    counts = rejection_sample(checkpoint, out, manifest, n=3, min_reward=1.0, summary=summary)
    assert counts == {"records": 2, "samples": 6, "kept": 3, "keep_rate": 0.5, "records_kept": 1, "written": 1}
    assert json.loads(summary.read_text()) == counts
    (written,) = lines(out)
    assert written["id"] == records[0]["id"] and written["question"] == records[0]["question"]
    assert written["reasoning"] == "I count them carefully." and written["answer"] == records[0]["answer"]
    media = [key for key in ("image", "audio") if records[0].get(key)]
    assert media and all((out.parent / written[key]).is_file() for key in media)
    read_manifest(out, "sft")  # a valid SFT manifest: fields present, media found from its own folder


def test_command_on_synthetic_data(checkpoint, tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    assert main(["sample", "--checkpoint", str(checkpoint), "--synth-n", "2", "--n", "2", "--out", str(out),
                 "--min-reward", "0", "--rewards", "format=1", "--max-new-tokens", "4", "--no-progress"]) == 0
    assert "sampled 4 responses for 2 records" in capsys.readouterr().out
    assert out.is_file() and (tmp_path / "sft_synth" / "train.jsonl").is_file()


def test_rewards_flag_is_parsed_and_checked():
    assert parse_rewards("accuracy=1, format=0.5") == {"accuracy": 1.0, "format": 0.5}
    for bad in ("accuracy", "=1", "format=high"):
        with pytest.raises(ValueError, match="--rewards: expected NAME=WEIGHT"):
            parse_rewards(bad)
