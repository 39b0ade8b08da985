"""Turn one image or one sound into the tensors the encoders expect."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile
import torch
import torchaudio.functional
from PIL import Image, ImageOps
from torchvision import tv_tensors
from torchvision.transforms import v2

from mmr1.config import AudioConfig, VisionConfig
from mmr1.datamodules.regions import check_inside

ImageSource = Union[str, Path, Image.Image, torch.Tensor]
AudioSource = Union[str, Path, np.ndarray, torch.Tensor]


@dataclass
class ImageAugment:
    """Training-time augmentation; the defaults keep counts, colours and left/right intact."""

    crop_scale: tuple[float, float] = (1.0, 1.0)  # RandomResizedCrop area range; (1, 1) disables it
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.0
    hue: float = 0.0  # > 0 changes colours, which questions ask about
    hflip: bool = False  # questions may say left or right
    rotate: float = 0.0  # RandomAffine: largest rotation in degrees, either way
    translate: float = 0.0  # RandomAffine: largest shift as a fraction of the width and of the height
    scale: tuple[float, float] = (1.0, 1.0)  # RandomAffine: zoom range; (1, 1) keeps the size


@dataclass
class AudioAugment:
    """Training-time augmentation of waveforms (SpecAugment, on log-mel, is the audio encoder's)."""

    speed: tuple[float, ...] = (1.0,)  # speed perturbation (Kaldi's 0.9, 1.0, 1.1): one factor drawn per
    # clip; tempo and pitch change together, as between speakers


class ImageProcessor:
    """Any Pillow-readable file, PIL image or tensor → normalised RGB float [3, S, S]."""

    def __init__(self, cfg: VisionConfig, train: bool = False, augment: Optional[ImageAugment] = None):
        size, augment = cfg.image_size, augment or ImageAugment()
        steps: list = [v2.Resize((size, size), antialias=True)]
        if train:
            if tuple(augment.crop_scale) != (1.0, 1.0):
                steps = [v2.RandomResizedCrop((size, size), scale=tuple(augment.crop_scale), antialias=True)]
            if augment.brightness or augment.contrast or augment.saturation or augment.hue:
                steps.append(v2.ColorJitter(augment.brightness, augment.contrast, augment.saturation, augment.hue))
            if augment.hflip:
                steps.append(v2.RandomHorizontalFlip())
            if augment.rotate or augment.translate or tuple(augment.scale) != (1.0, 1.0):
                shift = (augment.translate, augment.translate) if augment.translate else None
                steps.append(v2.RandomAffine(augment.rotate, translate=shift, scale=tuple(augment.scale)))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
        self.transform = v2.Compose(steps)

    def __call__(self, source: ImageSource, boxes: Optional[torch.Tensor] = None):
        """pixels [3, S, S]; with boxes [R, 4] (x0, y0, x1, y1 in the source's pixels), (pixels, boxes [R, 4])
        moved by the same resize, crop, flip and affine (torchvision's BoundingBoxes), clamped to the image."""
        if not isinstance(source, (str, Path, Image.Image, torch.Tensor)):
            raise ValueError(f"expected a path, a PIL image or a [3, H, W] tensor, got {type(source).__name__}")
        pixels = _to_tensor(load_image(source) if isinstance(source, (str, Path)) else source)  # [3, H, W]
        if pixels.shape[-1] == 0 or pixels.shape[-2] == 0:
            raise ValueError(f"empty image ({pixels.shape[-1]}x{pixels.shape[-2]} pixels)")
        if boxes is not None:
            check_inside(boxes, pixels.shape[-1], pixels.shape[-2])
            boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(pixels.shape[-2:]))
            pixels, boxes = self.transform(pixels, boxes)
            boxes = v2.functional.clamp_bounding_boxes(boxes).as_subclass(torch.Tensor)  # [R, 4]
        else:
            pixels = self.transform(pixels)
        if not torch.isfinite(pixels).all():
            raise ValueError("pixels hold NaN or Inf")
        return pixels if boxes is None else (pixels, boxes)


def load_image(path: str | Path) -> Image.Image:
    """Decode a file fully (so corrupt files fail here), applying its EXIF rotation."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e


def _to_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """RGB [3, H, W], uint8 or float in [0, 1]; alpha is composited on white, 16-bit scaled down."""
    if isinstance(image, torch.Tensor):
        pixels = image if image.dim() == 3 else image.unsqueeze(0)  # [C, H, W]
        if pixels.shape[0] not in (1, 3):
            raise ValueError(f"image tensor: expected [3, H, W], [1, H, W] or [H, W], got {list(image.shape)}")
        return pixels.expand(3, -1, -1)
    if image.mode.startswith("I") or image.mode == "F":
        scale = 1.0 if image.mode == "F" else 65535.0
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / scale).clamp(0, 1)  # [H, W]
        return pixels.expand(3, -1, -1)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return v2.functional.pil_to_tensor(image.convert("RGB"))


class AudioProcessor:
    """WAV/FLAC/OGG file or array → mono float32 waveform at cfg.sample_rate."""

    def __init__(self, cfg: AudioConfig, train: bool = False, augment: Optional[AudioAugment] = None):
        self.sample_rate = cfg.sample_rate
        self.max_seconds = cfg.max_seconds
        factors = list((augment or AudioAugment()).speed)
        if not factors or any(not 0.5 <= f <= 2.0 for f in factors):
            raise ValueError(f"speed: expected factors between 0.5 and 2.0, got {factors}")
        self.speed = (torchaudio.transforms.SpeedPerturbation(cfg.sample_rate, factors)
                      if train and factors != [1.0] else None)

    def __call__(self, source: AudioSource, sample_rate: Optional[int] = None) -> tuple[torch.Tensor, int]:
        """(waveform [S], S). Arrays (see `audio_array`) are at `sample_rate` (default: the model's)."""
        if isinstance(source, (str, Path)):
            samples, sample_rate = self._read(source)
            where = str(source)
        else:
            sample_rate = sample_rate or self.sample_rate
            samples, where = audio_array(source), "audio array"
            self._check_duration(where, len(samples) / sample_rate)
        wave = torch.from_numpy(np.ascontiguousarray(samples if samples.ndim == 1 else samples.mean(axis=1)))
        if wave.numel() == 0:
            raise ValueError(f"{where}: no samples")
        if not torch.isfinite(wave).all():
            raise ValueError(f"{where}: samples hold NaN or Inf")
        if sample_rate != self.sample_rate:
            wave = torchaudio.functional.resample(wave, sample_rate, self.sample_rate)
        if self.speed is not None:
            wave = self.speed(wave.float())[0]  # [S / factor]
        return wave.float(), wave.numel()

    def _read(self, path: str | Path) -> tuple[np.ndarray, int]:
        try:
            self._check_duration(str(path), soundfile.info(str(path)).duration)
            samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [N, C]
        except (RuntimeError, OSError, TypeError) as e:
            raise ValueError(f"{path}: cannot read audio ({e})") from e
        return samples, sample_rate

    def _check_duration(self, where: str, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise ValueError(f"{where}: {seconds:.2f} s is longer than audio.max_seconds={self.max_seconds:g} s")


def audio_array(source: np.ndarray | torch.Tensor) -> np.ndarray:
    """Samples as float32 [N] or [N, C]. Accepts [N], [N, C] and torchaudio's [C, N] (C <= 8 channels);
    integer PCM is scaled to [-1, 1] by its dtype. Any other shape or dtype is an error, never a guess."""
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    samples = np.asarray(source)
    if samples.ndim == 2 and samples.shape[1] > 8 and samples.shape[0] <= 8:
        samples = samples.T  # torchaudio's [C, N] -> [N, C]
    if samples.ndim not in (1, 2) or (samples.ndim == 2 and samples.shape[1] > 8):
        raise ValueError(f"audio array: expected [N], [N, C] or [C, N] with C <= 8 channels, "
                         f"got shape {list(samples.shape)}")
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        middle = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed PCM, 128 for uint8
        return ((samples.astype(np.float64) - middle) / (info.max - middle)).astype(np.float32)
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"audio array: expected float or integer PCM samples, got dtype {samples.dtype}")
    return samples.astype(np.float32)
