"""benchmarks/supervised_perception.py: its trainer learns what is learnable, and the script runs on the real data."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from supervised_perception import Probe, train_and_score  # noqa: E402


class LinearEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(10, 16)

    def forward(self, x):
        return SimpleNamespace(pooled=self.linear(x))  # what Probe reads of an encoder's output


def test_train_and_score_learns_a_separable_task_and_scores_on_the_test_items():
    torch.manual_seed(0)
    centres = torch.eye(10) * 3  # ten well-separated clusters
    items = [(centres[d] + 0.3 * torch.randn(10), d) for d in range(10) for _ in range(20)]

    def collate(rows, train):
        return (torch.stack([x for x, _ in rows]),), torch.tensor([d for _, d in rows])

    assert train_and_score(Probe(LinearEncoder(), 16), items[::2], items[1::2], collate, 300, 0) > 0.95
    flipped = [(x, (d + 1) % 10) for x, d in items[1::2]]  # the test labels decide the score
    assert train_and_score(Probe(LinearEncoder(), 16), items[::2], flipped, collate, 300, 0) < 0.1


@pytest.mark.needs_data
def test_supervised_perception_benchmark_runs_on_the_digits_task(shared_data):
    done = subprocess.run([sys.executable, "benchmarks/supervised_perception.py", "--speaker", "george", "--steps",
                           "2", "--seeds", "0", "--affine", "--fsdd", str(shared_data / "fsdd")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["speaker"] == "george" and result["affine"] is True and result["steps"] == 2
    assert 0 <= result["image_digit"] <= 1 and 0 <= result["spoken_digit"] <= 1


@pytest.mark.needs_data
def test_supervised_perception_benchmark_trains_one_encoder_with_overrides(shared_data):
    done = subprocess.run([sys.executable, "benchmarks/supervised_perception.py", "--speaker", "george", "--steps",
                           "2", "--seeds", "0", "--media", "audio", "--overrides", '{"audio": {"vtlp": 0.1}}',
                           "--fsdd", str(shared_data / "fsdd")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["overrides"] == {"audio": {"vtlp": 0.1}} and "image_digit" not in result
    assert 0 <= result["spoken_digit"] <= 1


def test_supervised_perception_benchmark_selects_on_folds_of_the_training_images():
    done = subprocess.run([sys.executable, "benchmarks/supervised_perception.py", "--folds", "3", "--steps", "2",
                           "--seeds", "0", "--affine"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["folds"] == 3 and result["affine"] is True and len(result["image_digit_folds"]) == 3
    assert abs(result["image_digit_mean"] - sum(result["image_digit_folds"]) / 3) <= 1e-4
    assert "spoken_digit" not in result
