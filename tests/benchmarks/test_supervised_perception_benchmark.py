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
    def __init__(self, linear: torch.nn.Linear | None = None):
        super().__init__()
        self.linear = linear or torch.nn.Linear(10, 16)

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
@pytest.mark.parametrize("flags, shown", [
    (["--overrides", '{"audio": {"vtlp": 0.1}}'], {"overrides": {"audio": {"vtlp": 0.1}}}),
    (["--speaker-adversary", "0.5"], {"speaker_adversary": 0.5}),
])
def test_supervised_perception_benchmark_trains_the_audio_encoder_alone(shared_data, flags, shown):
    done = subprocess.run([sys.executable, "benchmarks/supervised_perception.py", "--speaker", "george", "--steps",
                           "2", "--seeds", "0", "--media", "audio", *flags, "--fsdd", str(shared_data / "fsdd")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {key: result[key] for key in shown} == shown and "image_digit" not in result
    assert 0 <= result["spoken_digit"] <= 1


def test_supervised_perception_benchmark_selects_on_folds_of_the_training_images():
    done = subprocess.run([sys.executable, "benchmarks/supervised_perception.py", "--folds", "3", "--steps", "2",
                           "--seeds", "0", "--affine"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["folds"] == 3 and result["affine"] is True and len(result["image_digit_folds"]) == 3
    assert abs(result["image_digit_mean"] - sum(result["image_digit_folds"]) / 3) <= 1e-4
    assert "spoken_digit" not in result


def test_gradient_reversal_is_the_identity_forward_and_flips_the_scaled_gradient():
    from supervised_perception import GradientReversal

    x = torch.randn(4, 3, requires_grad=True)
    y = GradientReversal.apply(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, -0.5))


def test_the_speaker_adversary_shrinks_what_the_pooled_state_tells_of_the_group_and_keeps_the_digits():
    """Items whose inputs carry their group in two extra dimensions, encoders from the same initial weights: with
    the adversary the two groups' mean pooled states lie much closer (a reversed gradient pulls them together; an
    unreversed one would push them apart), and the digits are still learnt."""
    centres = torch.eye(10) * 3
    torch.manual_seed(0)
    items = [(torch.cat([centres[d] + 0.3 * torch.randn(10), torch.eye(2)[g] * 3]), d, g)
             for d in range(10) for g in range(2) for _ in range(10)]

    def collate(rows, train):
        return ((torch.stack([x for x, _, _ in rows]),), torch.tensor([d for _, d, _ in rows]),
                torch.tensor([g for _, _, g in rows]))

    def trained(adversary: float) -> tuple[float, float]:  # (digit accuracy, distance of the groups' mean states)
        torch.manual_seed(1)
        encoder = torch.nn.Linear(12, 16)
        probe = Probe(LinearEncoder(encoder), 16, groups=2, adversary=adversary) if adversary else Probe(
            LinearEncoder(encoder), 16)
        accuracy = train_and_score(probe, items[::2], items[1::2], collate, 400, 0)
        with torch.no_grad():
            pooled = encoder(torch.stack([x for x, _, _ in items]))  # [N, 16]
        groups = torch.tensor([g for _, _, g in items])
        return accuracy, (pooled[groups == 0].mean(0) - pooled[groups == 1].mean(0)).norm().item()

    plain, hiding = trained(0.0), trained(1.0)
    assert plain[0] > 0.95 and hiding[0] > 0.95
    assert hiding[1] < 0.75 * plain[1]
    with pytest.raises(ValueError, match="adversary"):
        Probe(LinearEncoder(), 16, groups=1, adversary=1.0)
    with pytest.raises(ValueError, match="groups"):
        Probe(LinearEncoder(), 16, groups=2, adversary=1.0).loss((items[0][0][None, :10],), torch.tensor([1]))
