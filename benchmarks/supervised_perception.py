"""How well do the digits task's encoders perceive when told the answer? A supervised baseline: the image
encoder and the audio encoder of the shipped digits model (configs/digits_contrastive.yaml's preset and
overrides), each with a linear head, trained by cross-entropy on the digit labels of the training split —
supervision the recipe never gets — and scored on the test split of `mmr1 data digits` (test images never
trained on; every clip of the held-out speaker):

    .venv/bin/python benchmarks/supervised_perception.py --speaker theo [--steps 600 --seeds 0 1 2] [--affine]
        [--media audio] [--overrides '{"audio": {"vtlp": 0.1}}'] [--speaker-adversary 0.3]

--affine trains the image encoder on randomly rotated (10°), shifted (10%) and zoomed (0.9–1.1) images
(`ImageAugment`, as `image_augment` gives any data module).

--speaker-adversary W trains the audio encoder to hide its training speakers (speaker-adversarial training, as
Meng et al. 2018 made ASR speaker-invariant): a two-layer head tells each training clip's speaker from the pooled
state, and the encoder gets that head's gradient reversed and scaled by W (ramped up over the first third). The
head's weights are drawn before either encoder trains, so with both media the image figures change too: use
--media audio.

--folds K selects, never touching the test split: the image encoder is trained K times, each time with one
K-th of the training images held out (contiguous blocks in `load_digits` order, so other writers' hands) and
scored on it; it prints each fold's accuracy and their mean (the README's choice of the alignment length):

    .venv/bin/python benchmarks/supervised_perception.py --folds 5 --steps 1500 --affine [--overrides '{"vision": {"depth": 4}}']

The recipe's perception accuracies (README, `benchmarks/real_digits.py`) are read against these figures:
where the recipe reaches what direct supervision of the same encoder on the same data reaches, the limit
is the encoder and its training data (four voices, 1,257 training images), not the recipe. It is a
baseline, not a bound: the recipe can beat it (lucas's spoken digit, README).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mmr1_commands import FSDD

from mmr1.config import Config
from mmr1.datamodules.collate import media
from mmr1.datamodules.digits import SPEAKERS, clip_speaker, split_clips, write_images
from mmr1.datamodules.processors import AudioProcessor, ImageAugment, ImageProcessor, load_image
from mmr1.encoders.audio import AudioEncoder
from mmr1.encoders.vision import VisionEncoder

DIGITS_OVERRIDES = {"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0}}  # digits_contrastive.yaml's
AFFINE = ImageAugment(rotate=10, translate=0.1, scale=(0.9, 1.1))


class GradientReversal(torch.autograd.Function):
    """The identity forward; backward, the gradient times −weight (Ganin and Lempitsky 2015, DANN)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


class Probe(nn.Module):
    """An encoder and a linear head on its pooled state; with `adversary` > 0 and `groups` classes, also a
    two-layer head that tells each item's group (its speaker) from the pooled state through a gradient reversal of
    that weight: the encoder learns to hide the group while the head learns to tell it (speaker-adversarial
    training, Meng et al. 2018)."""

    def __init__(self, encoder: nn.Module, width: int, groups: int = 0, adversary: float = 0.0):
        super().__init__()
        if adversary < 0 or (adversary > 0 and groups < 2):
            raise ValueError(f"adversary: expected a weight >= 0, and at least 2 groups beside a positive one; got "
                             f"{adversary} with {groups} groups")
        self.encoder, self.head, self.adversary_weight = encoder, nn.Linear(width, 10), adversary
        self.adversary = (nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, groups))
                          if adversary > 0 else None)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(*inputs).pooled)  # [B, 10]

    def loss(self, inputs: tuple, labels: torch.Tensor, groups: torch.Tensor | None = None,
             ramp: float = 1.0) -> torch.Tensor:
        """Cross-entropy on the digits; plus, with an adversary, its cross-entropy on `groups` [B], the encoder's
        gradient from it reversed and scaled by adversary × `ramp`."""
        pooled = self.encoder(*inputs).pooled  # [B, W]
        loss = nn.functional.cross_entropy(self.head(pooled), labels)
        if self.adversary is None:
            return loss
        if groups is None:
            raise ValueError("adversary: the training batches carry no groups (speakers) to hide")
        hidden = GradientReversal.apply(pooled, self.adversary_weight * ramp)
        return loss + nn.functional.cross_entropy(self.adversary(hidden), groups)


def train_and_score(probe: Probe, train: list, test: list, collate, steps: int, seed: int) -> float:
    """Train on `train` for `steps` steps (batch 32; AdamW lr 1e-3, 20 warm-up steps, linear decay; an adversary's
    weight ramps up linearly over the first third of the steps, as DANN's does), then the accuracy on `test`.
    `collate(items, train)` -> (encoder inputs, digits [B]) or (encoder inputs, digits [B], groups [B])."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps))
    probe.train()
    for step in range(steps):
        loss = probe.loss(*collate(rng.sample(train, 32), True), ramp=min(1.0, 3 * step / steps))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    probe.eval()
    right = 0
    with torch.no_grad():
        for start in range(0, len(test), 128):
            inputs, labels, *_ = collate(test[start:start + 128], False)
            right += (probe(*inputs).argmax(-1) == labels).sum().item()
    return right / len(test)


def digits_config(overrides: dict | None) -> Config:
    """The digits model's config (the tiny preset, DIGITS_OVERRIDES), `overrides` merged into its sections."""
    merged = {part: {**DIGITS_OVERRIDES.get(part, {}), **(overrides or {}).get(part, {})}
              for part in {*DIGITS_OVERRIDES, *(overrides or {})}}
    return Config.from_name("tiny", **merged)


def digit_images(config: Config) -> dict[str, list]:
    """split -> [(PIL image, digit)] of `mmr1 data digits`'s image splits, at the config's image size."""
    with tempfile.TemporaryDirectory() as folder:
        return {split: [(load_image(Path(folder) / path), digit) for path, digit in rows]
                for split, rows in write_images(Path(folder), config.vision.image_size).items()}


def image_collate(config: Config, affine: bool):
    """collate(items, train) for (PIL image, digit) items -> ((pixel_values [B, 3, H, W],), digits [B]); training
    batches are augmented with AFFINE when `affine`."""
    pixels = {True: ImageProcessor(config.vision, train=True, augment=AFFINE if affine else None),
              False: ImageProcessor(config.vision)}

    def image_batch(items, train: bool):
        batch = media([{"pixel_values": pixels[train](image), "audio_values": None} for image, _ in items])
        return (batch["pixel_values"],), torch.tensor([digit for _, digit in items])

    return image_batch


def supervised_accuracies(speaker: str, steps: int, seed: int, affine: bool = False, fsdd: Path = FSDD,
                          encoders: tuple[str, ...] = ("image", "audio"), overrides: dict | None = None,
                          speaker_adversary: float = 0.0) -> dict[str, float]:
    """{"image_digit": test-image accuracy, "spoken_digit": held-out-speaker accuracy} of one seed, for the
    `encoders` asked ("image", "audio"); `overrides` ({"audio": {...}}) change the encoders' configs beyond the digits
    model's; `speaker_adversary` > 0 trains the audio encoder to hide the training speakers (`Probe`'s adversary)."""
    config = digits_config(overrides)
    torch.manual_seed(seed)
    images = digit_images(config)
    image_train, image_test = images["train"], images["test"]
    clips = split_clips(fsdd, speaker)
    load_audio = AudioProcessor(config.audio)
    speakers = sorted({clip_speaker(path) for path, _ in clips["train"]})
    audio_train = [(load_audio(path)[0], digit, speakers.index(clip_speaker(path))) for path, digit in clips["train"]]
    audio_test = [(load_audio(path)[0], digit, 0) for path, digit in clips["test"]]  # no speaker is scored

    image_batch = image_collate(config, affine)

    def audio_batch(items, train: bool):
        batch = media([{"pixel_values": None, "audio_values": wave} for wave, _, _ in items])
        return ((batch["audio_values"], batch["audio_lengths"]), torch.tensor([digit for _, digit, _ in items]),
                torch.tensor([who for _, _, who in items]))

    vision = Probe(VisionEncoder(config.vision), config.vision.width)
    audio = Probe(AudioEncoder(config.audio), config.audio.width, len(speakers), speaker_adversary)
    accuracies = {}
    if "image" in encoders:
        accuracies["image_digit"] = train_and_score(vision, image_train, image_test, image_batch, steps, seed)
    if "audio" in encoders:
        accuracies["spoken_digit"] = train_and_score(audio, audio_train, audio_test, audio_batch, steps, seed)
    return accuracies


def image_fold_accuracies(folds: int, steps: int, seed: int, affine: bool = False,
                          overrides: dict | None = None) -> list[float]:
    """Accuracy of the image encoder on each of `folds` contiguous blocks of the training images, trained on the
    rest (fold f uses seed `seed + f`)."""
    config = digits_config(overrides)
    images = digit_images(config)["train"]
    image_batch = image_collate(config, affine)
    accuracies, n = [], len(images)
    for fold in range(folds):
        lo, hi = fold * n // folds, (fold + 1) * n // folds
        torch.manual_seed(seed + fold)
        probe = Probe(VisionEncoder(config.vision), config.vision.width)
        accuracies.append(train_and_score(probe, images[:lo] + images[hi:], images[lo:hi], image_batch, steps,
                                          seed + fold))
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speaker", choices=SPEAKERS, default="theo", help="the held-out (test) speaker")
    parser.add_argument("--steps", type=int, default=600, help="training steps of each encoder (batch 32)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--affine", action="store_true", help="affine augmentation of the training images")
    parser.add_argument("--fsdd", type=Path, default=FSDD, help="the Free Spoken Digit Dataset folder")
    parser.add_argument("--media", nargs="+", choices=["image", "audio"], default=["image", "audio"],
                        help="which encoders to train and score")
    parser.add_argument("--overrides", type=json.loads, default={},
                        help='JSON config overrides of the encoders, e.g. \'{"audio": {"vtlp": 0.1}}\'')
    parser.add_argument("--speaker-adversary", type=float, default=0.0,
                        help="W > 0: the audio encoder also learns to hide its four training speakers from a "
                        "speaker head behind a gradient reversal of weight W")
    parser.add_argument("--folds", type=int, default=0,
                        help="K > 1: K-fold selection on the training images instead (the image encoder only; no speaker, "
                        "no test split)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.folds:
        if args.folds < 2 or "image" not in args.media:
            raise SystemExit(f"--folds: expected at least 2 folds and --media image, got {args.folds}, {args.media}")
        for seed in args.seeds:
            start = time.perf_counter()
            accuracies = image_fold_accuracies(args.folds, args.steps, seed, args.affine, args.overrides)
            print(json.dumps({"folds": args.folds, "seed": seed, "steps": args.steps, "affine": args.affine,
                              "overrides": args.overrides, "image_digit_folds": [round(a, 4) for a in accuracies],
                              "image_digit_mean": round(sum(accuracies) / len(accuracies), 4),
                              "minutes": round((time.perf_counter() - start) / 60, 1)}), flush=True)
        return
    for seed in args.seeds:
        start = time.perf_counter()
        accuracies = supervised_accuracies(args.speaker, args.steps, seed, args.affine, args.fsdd, tuple(args.media),
                                           args.overrides, args.speaker_adversary)
        result = {k: round(v, 4) for k, v in accuracies.items()}
        print(json.dumps({"speaker": args.speaker, "seed": seed, "steps": args.steps, "affine": args.affine,
                          "overrides": args.overrides, "speaker_adversary": args.speaker_adversary, **result,
                          "minutes": round((time.perf_counter() - start) / 60, 1)}), flush=True)


if __name__ == "__main__":
    main()
