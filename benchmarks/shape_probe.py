"""Does an image encoder tell the built-in shapes' kinds and colours apart? Two measurements on single shapes
drawn as the synthetic generator draws them (size 20-30% of the image, random place, kind and colour):

    probe       for each checkpoint (e.g. a pipeline's pretrain/export): the nearest class mean of the pooled
                image state (kind, colour; means from 400 images, scored on 400 others) and a logistic
                regression on all of the image tokens (kind)
    supervised  a fresh ViT of the recipe (tiny preset, conv stem), with a linear head, trained on the kind
                label alone: its accuracy on 600 new images every 100 steps (how many images it needs)
    scenes      (--scenes N) one image token at a time, on N training scenes of 3-5 shapes with their beeps: a
                logistic regression for the kind and colour of the one shape under the token's patch, and for
                the token's column in the patch grid, at the image encoder's output and at the fused prefix the
                core reads (fit on half the scenes, scored on the other half)
    scene-supervised  (--scene-supervised-steps N) a fresh ViT of the recipe with a linear head on each patch
                token, trained on the kind of the one shape under it in new scenes of 3-5 shapes every step:
                its per-token accuracy on 600 other scenes every 100 steps (what the encoder can carry)

    .venv/bin/python benchmarks/shape_probe.py [EXPORT ...] [--supervised-steps 800 --batch 16] [--scenes 600]
        [--scene-supervised-steps 600 --batch 32]

Chance is 33% for a kind and 25% for a colour. It trains no checkpoint, so it is a cheap selection signal for
the pipeline's alignment stage (docs/figures_history.md: "Six releases ago: the shapes' kinds, and a longer
cold start.").
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from torch import nn

from alignment_probe import nearest_mean

from mmr1.checkpoint import load_model
from mmr1.config import Config
from mmr1.datamodules.processors import AudioProcessor, ImageProcessor
from mmr1.datamodules.synth import COLOURS, KINDS, Shape, Synth, _shapes, render_audio, render_image
from mmr1.encoders.vision import VisionEncoder

PROBE_FIT, PROBE_TEST = 400, 400
MIN_COVER = 0.375  # share of its patch (24 pixels of an 8×8 one) a shape's box must cover for the token to be
# labelled with it


def single_shapes(n: int, seed: int, image_size: int = 32) -> list[tuple[Image.Image, int, int]]:
    """(image, kind index, colour index) of n images with one shape each."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        shapes = _shapes(rng, 1, image_size, unique_largest=False)
        if shapes:
            shape = shapes[0]
            out.append((render_image(shapes, image_size), KINDS.index(shape.kind), list(COLOURS).index(shape.colour)))
    return out


def pixels(processor: ImageProcessor, items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """pixel_values [N, 3, H, W] and image_mask [N] (all True)."""
    return torch.stack([processor(image) for image, _, _ in items]), torch.ones(len(items), dtype=torch.bool)


@torch.no_grad()
def probe(checkpoint: str) -> dict[str, float]:
    """kind and colour by nearest class mean of the pooled state; kind by logistic regression on all tokens."""
    model, _ = load_model(checkpoint)
    model.eval()
    processor = ImageProcessor(model.config.vision)
    fit, test = single_shapes(PROBE_FIT, 0, model.config.vision.image_size), \
        single_shapes(PROBE_TEST, 1, model.config.vision.image_size)
    states = [model.vision(*pixels(processor, items)) for items in (fit, test)]
    labels = [[torch.tensor([item[j] for item in items]) for items in (fit, test)] for j in (1, 2)]  # kind, colour
    tokens = [s.tokens.flatten(1).numpy() for s in states]  # [N, T * W]
    regression = LogisticRegression(max_iter=3000).fit(tokens[0], labels[0][0].numpy())
    return {"kind_nearest_mean": nearest_mean(states[0].pooled, labels[0][0], states[1].pooled, labels[0][1]),
            "colour_nearest_mean": nearest_mean(states[0].pooled, labels[1][0], states[1].pooled, labels[1][1]),
            "kind_logistic_tokens": float(regression.score(tokens[1], labels[0][1].numpy()))}


def patch_labels(shapes: tuple[Shape, ...], grid: int, patch: int) -> list[Shape | None]:
    """The shape under each patch, row-major: the one shape whose box covers at least MIN_COVER of the patch's
    area and no other shape's box touching it; None for empty or shared patches."""
    labels = []
    for row in range(grid):
        for column in range(grid):
            covers = []
            for shape in shapes:
                dx = min((column + 1) * patch, shape.x + shape.size) - max(column * patch, shape.x)
                dy = min((row + 1) * patch, shape.y + shape.size) - max(row * patch, shape.y)
                if dx > 0 and dy > 0:
                    covers.append((shape, dx * dy))
            labels.append(covers[0][0] if len(covers) == 1 and covers[0][1] >= MIN_COVER * patch * patch else None)
    return labels


@torch.no_grad()
def scene_tokens(checkpoint: str, n: int) -> dict[str, float]:
    """Per-token kind, colour and column by logistic regression, at the encoder's output and at the fused prefix."""
    model, _ = load_model(checkpoint)
    model.eval()
    vision = model.vision
    if model.config.fusion.resampler_tokens:
        raise ValueError(f"{checkpoint}: --scenes needs one fused token per patch (fusion.resampler_tokens 0), "
                         f"got fusion.resampler_tokens {model.config.fusion.resampler_tokens}")
    if model.audio is None:
        raise ValueError(f"{checkpoint}: --scenes needs a model with an audio encoder (the scenes' prefix has "
                         f"audio), this one has none")
    grid, patch = vision.grid[0], vision.patch_size
    specs = [Synth(seed=5, split="train", difficulty=3, image_size=vision.image_size).spec(i) for i in range(n)]
    images, sounds = ImageProcessor(model.config.vision), AudioProcessor(model.config.audio)
    pixel_values = torch.stack([images(render_image(s.shapes, vision.image_size)) for s in specs])  # [N, 3, H, W]
    waves = [sounds(render_audio(s.tones))[0] for s in specs]
    audio = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)  # [N, S]
    lengths = torch.tensor([w.numel() for w in waves])
    present = torch.ones(n, dtype=torch.bool)
    patches = grid * grid
    prefix = model.prefix(pixel_values=pixel_values, image_mask=present, audio_values=audio, audio_lengths=lengths)
    encoded = prefix.encoded["image"].tokens[:, -patches:]  # [N, grid², W]: the encoder's patch tokens
    fused = prefix.embeds[:, vision.keep_class_token:vision.keep_class_token + patches]  # [N, grid², d_model]
    rows, labels = [], {"kind": [], "colour": [], "column": []}
    for i, spec in enumerate(specs):
        for t, shape in enumerate(patch_labels(spec.shapes, grid, patch)):
            if shape is not None:
                rows.append((i, t))
                labels["kind"].append(KINDS.index(shape.kind))
                labels["colour"].append(list(COLOURS).index(shape.colour))
                labels["column"].append(t % grid)
    index = np.array(rows)  # [tokens, 2]: scene, token
    fit = index[:, 0] < n // 2
    scores = {"scene_tokens": len(rows)}
    for place, states in (("encoder", encoded), ("fused", fused)):
        x = states[index[:, 0], index[:, 1]].numpy()  # [tokens, width]
        for name, y in labels.items():
            y = np.array(y)
            regression = LogisticRegression(max_iter=3000).fit(x[fit], y[fit])
            scores[f"{place}_{name}"] = float(regression.score(x[~fit], y[~fit]))
    return scores


def supervised(steps: int, batch: int, seed: int = 0, lr: float = 1e-3) -> list[tuple[int, float]]:
    """(step, kind accuracy on 600 new images) every 100 steps of a fresh recipe ViT + linear head."""
    torch.manual_seed(seed)
    config = Config.from_name("tiny", vision={"stem": "conv"}).vision
    encoder = VisionEncoder(config)
    head = nn.Linear(encoder.width, len(KINDS))
    processor = ImageProcessor(config)
    test = single_shapes(600, 10_000 + seed, config.image_size)
    test_x, test_mask = pixels(processor, test)
    test_y = torch.tensor([kind for _, kind, _ in test])

    def loss_at(step: int) -> torch.Tensor:
        items = single_shapes(batch, seed * 1_000_003 + step, config.image_size)
        x, mask = pixels(processor, items)
        return F.cross_entropy(head(encoder(x, mask).pooled), torch.tensor([kind for _, kind, _ in items]))

    def accuracy() -> float:
        return head(encoder(test_x, test_mask).pooled).argmax(-1).eq(test_y).float().mean().item()

    return learning_curve(encoder, head, steps, lr, loss_at, accuracy)


def learning_curve(encoder: VisionEncoder, head: nn.Module, steps: int, lr: float,
                   loss_at: Callable[[int], torch.Tensor], accuracy: Callable[[], float]) -> list[tuple[int, float]]:
    """Train encoder + head with AdamW on `loss_at(step)` for steps 1..steps; (step, `accuracy()` in eval mode)
    every 100 steps and at the last."""
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=lr)
    curve = []
    for step in range(1, steps + 1):
        loss = loss_at(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps:
            encoder.eval()
            with torch.no_grad():
                curve.append((step, accuracy()))
            encoder.train()
    return curve


def scene_kinds(n: int, first: int, processor: ImageProcessor, encoder: VisionEncoder) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """pixel_values [n, 3, H, W] of n training scenes of 3-5 shapes from index `first`, and each patch token's
    kind label [n, P] (the one shape under its patch, `patch_labels`; -100 for none)."""
    grid, patch = encoder.grid[0], encoder.patch_size
    specs = [Synth(seed=7, split="train", difficulty=3).spec(i) for i in range(first, first + n)]
    x = torch.stack([processor(render_image(s.shapes, 32)) for s in specs])
    y = torch.tensor([[KINDS.index(shape.kind) if shape is not None else -100
                       for shape in patch_labels(s.shapes, grid, patch)] for s in specs])
    return x, y


def scene_supervised(steps: int, batch: int, seed: int = 0, lr: float = 1e-3) -> list[tuple[int, float]]:
    """(step, per-token kind accuracy on 600 new scenes) every 100 steps of a fresh recipe ViT (conv stem) with a
    linear head on each patch token: how well this encoder can carry the kind of the shape under each token."""
    torch.manual_seed(seed)
    config = Config.from_name("tiny", vision={"stem": "conv", "pool": "avg"}).vision
    encoder, head, processor = VisionEncoder(config), nn.Linear(config.width, len(KINDS)), ImageProcessor(config)
    test_x, test_y = scene_kinds(600, 1_000_000, processor, encoder)
    labelled = test_y != -100

    def token_logits(x: torch.Tensor) -> torch.Tensor:  # [N, P, 3]
        return head(encoder(x, torch.ones(len(x), dtype=torch.bool)).tokens[:, -test_y.shape[1]:])

    def loss_at(step: int) -> torch.Tensor:  # fresh scenes every step
        x, y = scene_kinds(batch, step * batch, processor, encoder)
        return F.cross_entropy(token_logits(x).flatten(0, 1), y.flatten(), ignore_index=-100)

    def accuracy() -> float:
        return token_logits(test_x).argmax(-1)[labelled].eq(test_y[labelled]).float().mean().item()

    return learning_curve(encoder, head, steps, lr, loss_at, accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", help="checkpoint folders to probe")
    parser.add_argument("--supervised-steps", type=int, default=0, help="train a fresh ViT on kinds this long")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=0, help="also probe single image tokens on this many scenes")
    parser.add_argument("--scene-supervised-steps", type=int, default=0,
                        help="train a fresh ViT on each scene token's kind this long")
    args = parser.parse_args()
    if not args.checkpoints and not args.supervised_steps and not args.scene_supervised_steps:
        parser.error("name a checkpoint to probe, or --supervised-steps N, or --scene-supervised-steps N")
    for checkpoint in args.checkpoints:
        print(json.dumps({"checkpoint": checkpoint, **{k: round(v, 3) for k, v in probe(checkpoint).items()}}))
        if args.scenes:
            print(json.dumps({"checkpoint": checkpoint,
                              **{k: round(v, 3) for k, v in scene_tokens(checkpoint, args.scenes).items()}}))
    if args.supervised_steps:
        for step, accuracy in supervised(args.supervised_steps, args.batch, args.seed):
            print(json.dumps({"supervised_step": step, "batch": args.batch, "kind_accuracy": round(accuracy, 3)}))
    if args.scene_supervised_steps:
        for step, accuracy in scene_supervised(args.scene_supervised_steps, args.batch, args.seed):
            print(json.dumps({"scene_supervised_step": step, "batch": args.batch,
                              "token_kind_accuracy": round(accuracy, 3)}))


if __name__ == "__main__":
    main()
