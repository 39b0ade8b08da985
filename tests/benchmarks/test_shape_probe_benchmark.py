"""benchmarks/shape_probe.py: its single shapes carry the right labels, its probe scores what is separable, each
scene token is labelled with the one shape under its patch, and the script runs on a checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from shape_probe import nearest_mean, patch_labels, scene_tokens, single_shapes  # noqa: E402

from mmr1.config import Config  # noqa: E402
from mmr1.datamodules.synth import COLOURS, Shape  # noqa: E402
from mmr1.datamodules.tokenizer import Tokenizer  # noqa: E402
from mmr1.model import MultimodalModel  # noqa: E402


def test_single_shapes_are_labelled_with_the_colour_drawn():
    items = single_shapes(20, seed=0)
    assert len({kind for _, kind, _ in items}) == 3
    for image, _, colour in items:
        pixels = np.asarray(image).reshape(-1, 3)
        drawn = {tuple(p) for p in pixels} - {(0, 0, 0)}
        assert drawn == {list(COLOURS.values())[colour]}


def test_patch_labels_name_the_one_shape_covering_a_patch():
    """A 2×2 grid of 8-pixel patches: a square filling the top-left patch, a small circle inside the top-right
    patch (too little of it), a triangle and a square sharing the bottom-right patch; then a circle alone."""
    big = Shape("square", "red", 8, 0, 0)
    small = Shape("circle", "blue", 4, 10, 2)
    left, right = Shape("triangle", "green", 6, 8, 8), Shape("square", "yellow", 4, 14, 12)
    assert patch_labels((big, small, left, right), grid=2, patch=8) == [big, None, None, None]
    alone = Shape("circle", "blue", 6, 9, 1)
    assert patch_labels((alone,), grid=2, patch=8) == [None, alone, None, None]
    # 4-pixel patches: the share of the patch counts, so a quarter-covered patch is too little here too
    assert patch_labels((Shape("square", "red", 3, 0, 0), Shape("square", "red", 1, 5, 1)), grid=2, patch=4) == \
        [Shape("square", "red", 3, 0, 0), None, None, None]


def test_nearest_mean_scores_separable_states_and_flipped_labels():
    torch.manual_seed(0)
    labels = torch.arange(3).repeat(20)
    states = torch.eye(3)[labels] * 5 + 0.1 * torch.randn(60, 3)
    assert nearest_mean(states[:30], labels[:30], states[30:], labels[30:]) == 1.0
    assert nearest_mean(states[:30], labels[:30], states[30:], (labels[30:] + 1) % 3) == 0.0


def test_the_script_probes_a_checkpoint_its_scene_tokens_and_trains_the_supervised_baseline(tmp_path):
    """A fresh model with fusion.image_positions: its fused tokens tell their column apart, its encoder's not as well."""
    overrides = '{"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0, "image_positions": true}}'
    subprocess.run([sys.executable, "-m", "mmr1", "init", "--preset", "tiny", "--overrides", overrides,
                    "--out", str(tmp_path / "m")], check=True, capture_output=True)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "shape_probe.py"), str(tmp_path / "m"),
                          "--supervised-steps", "3", "--batch", "4", "--scenes", "60"],
                         capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert set(rows[0]) == {"checkpoint", "kind_nearest_mean", "colour_nearest_mean", "kind_logistic_tokens"}
    assert all(0.0 <= rows[0][k] <= 1.0 for k in rows[0] if k != "checkpoint")
    scene = rows[1]
    assert set(scene) == {"checkpoint", "scene_tokens", *(f"{place}_{label}" for place in ("encoder", "fused")
                                                           for label in ("kind", "colour", "column"))}
    assert scene["scene_tokens"] > 60
    assert scene["fused_column"] >= 0.9 and scene["fused_column"] > scene["encoder_column"] + 0.2
    assert rows[2] == {"supervised_step": 3, "batch": 4, "kind_accuracy": rows[2]["kind_accuracy"]}


@pytest.mark.parametrize("overrides, refusal", [
    ({"vision": {"stem": "conv"}}, "fusion.resampler_tokens 16"),  # the tiny preset's resampler
    ({"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0}, "audio": None}, "audio encoder"),
])
def test_scene_tokens_refuses_models_whose_prefix_it_cannot_slice(tmp_path, overrides, refusal):
    MultimodalModel(Config.from_name("tiny", **overrides)).save_pretrained(tmp_path / "m", Tokenizer.default())
    with pytest.raises(ValueError, match=refusal):
        scene_tokens(str(tmp_path / "m"), 2)


def test_scene_supervision_labels_each_token_with_the_shape_under_it_and_reports_a_curve():
    from shape_probe import scene_kinds, scene_supervised

    from mmr1.datamodules.processors import ImageProcessor
    from mmr1.datamodules.synth import KINDS, Synth
    from mmr1.encoders.vision import VisionEncoder

    config = Config.from_name("tiny", vision={"stem": "conv"}).vision
    x, y = scene_kinds(3, 5, ImageProcessor(config), VisionEncoder(config))
    assert x.shape == (3, 3, 32, 32) and y.shape == (3, 16)
    spec = Synth(seed=7, split="train", difficulty=3).spec(5)
    want = [KINDS.index(s.kind) if s is not None else -100 for s in patch_labels(spec.shapes, 4, 8)]
    assert y[0].tolist() == want and (y[0] != -100).any()
    curve = scene_supervised(steps=2, batch=4)
    assert [step for step, _ in curve] == [2] and 0.0 <= curve[0][1] <= 1.0
