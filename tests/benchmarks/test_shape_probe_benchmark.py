"""benchmarks/shape_probe.py: its single shapes carry the right labels, its probe scores what is separable, and
the script runs on a checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from shape_probe import nearest_mean, single_shapes  # noqa: E402

from mmr1.datamodules.synth import COLOURS  # noqa: E402


def test_single_shapes_are_labelled_with_the_colour_drawn():
    items = single_shapes(20, seed=0)
    assert len({kind for _, kind, _ in items}) == 3
    for image, _, colour in items:
        pixels = np.asarray(image).reshape(-1, 3)
        drawn = {tuple(p) for p in pixels} - {(0, 0, 0)}
        assert drawn == {list(COLOURS.values())[colour]}


def test_nearest_mean_scores_separable_states_and_flipped_labels():
    torch.manual_seed(0)
    labels = torch.arange(3).repeat(20)
    states = torch.eye(3)[labels] * 5 + 0.1 * torch.randn(60, 3)
    assert nearest_mean(states[:30], labels[:30], states[30:], labels[30:]) == 1.0
    assert nearest_mean(states[:30], labels[:30], states[30:], (labels[30:] + 1) % 3) == 0.0


def test_the_script_probes_a_checkpoint_and_trains_the_supervised_baseline(tmp_path):
    subprocess.run([sys.executable, "-m", "mmr1", "init", "--preset", "tiny", "--overrides",
                    '{"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0}}', "--out", str(tmp_path / "m")],
                   check=True, capture_output=True)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "shape_probe.py"), str(tmp_path / "m"),
                          "--supervised-steps", "3", "--batch", "4"], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert set(rows[0]) == {"checkpoint", "kind_nearest_mean", "colour_nearest_mean", "kind_logistic_tokens"}
    assert all(0.0 <= rows[0][k] <= 1.0 for k in rows[0] if k != "checkpoint")
    assert rows[1] == {"supervised_step": 3, "batch": 4, "kind_accuracy": rows[1]["kind_accuracy"]}
