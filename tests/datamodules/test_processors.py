import math

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from mmr1.config import AudioConfig, VisionConfig
from mmr1.datamodules.processors import AudioAugment, AudioProcessor, ImageAugment, ImageProcessor

VISION = VisionConfig(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def digit_image() -> np.ndarray:
    """A real 8x8 handwritten digit from scikit-learn, as uint8 0..255 (white on black)."""
    from sklearn.datasets import load_digits

    return (load_digits().images[0] * 255 / 16).astype(np.uint8)  # [8, 8]


@pytest.fixture
def digit_files(tmp_path):
    """The same digit as grayscale PNG, RGB JPEG, 16-bit PNG and RGBA (black ink on transparency)."""
    gray = digit_image()
    paths = {"png": tmp_path / "d.png", "jpeg": tmp_path / "d.jpg", "16bit": tmp_path / "d16.png",
             "rgba": tmp_path / "d_rgba.png"}
    Image.fromarray(gray).save(paths["png"])
    Image.fromarray(np.stack([gray] * 3, -1)).save(paths["jpeg"], quality=95)
    Image.fromarray(gray.astype(np.uint16) * 257).save(paths["16bit"])
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255 - gray  # opaque black where the background was: on white, the ink shows as white
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    return paths


def test_every_file_kind_gives_the_same_normalised_image(digit_files):
    process = ImageProcessor(VISION)
    assert Image.open(digit_files["16bit"]).mode.startswith("I")
    reference = process(digit_files["png"])
    assert reference.shape == (3, 32, 32) and reference.dtype == torch.float32
    assert reference.min() >= -1 and reference.max() <= 1 and reference.std() > 0.3
    for kind in ("jpeg", "16bit", "rgba"):
        assert (process(digit_files[kind]) - reference).abs().max() < 0.1, kind


def test_pil_and_tensor_inputs():
    process = ImageProcessor(VISION)
    gray = digit_image()
    from_pil = process(Image.fromarray(gray))
    assert torch.allclose(process(torch.from_numpy(gray)), from_pil, atol=1e-6)
    assert torch.allclose(process(torch.from_numpy(gray).float() / 255), from_pil, atol=0.02)  # uint8 resize rounds
    white = process(Image.new("RGB", (50, 20), (255, 255, 255)))
    assert white.shape == (3, 32, 32) and torch.allclose(white, torch.ones_like(white))


def test_augmentation_only_when_training():
    image = Image.fromarray(np.stack([digit_image()] * 3, -1))
    evaluate = ImageProcessor(VISION, train=False, augment=ImageAugment(crop_scale=(0.5, 0.9), hflip=True))
    assert torch.equal(evaluate(image), evaluate(image))
    train = ImageProcessor(VISION, train=True, augment=ImageAugment(crop_scale=(0.5, 0.9), hflip=True))
    torch.manual_seed(0)
    assert not torch.equal(train(image), train(image))
    assert train(image).shape == (3, 32, 32)


def test_affine_augmentation_moves_the_digit_when_training_only():
    image = Image.fromarray(np.stack([digit_image()] * 3, -1))
    augment = ImageAugment(brightness=0.0, contrast=0.0, rotate=15, translate=0.15, scale=(0.85, 1.15))
    assert torch.equal(ImageProcessor(VISION, augment=augment)(image), ImageProcessor(VISION)(image))
    train = ImageProcessor(VISION, train=True, augment=augment)
    torch.manual_seed(0)
    views = torch.stack([train(image) for _ in range(8)])  # [8, 3, 32, 32]
    centres = [(v[0] - v[0].min()).nonzero().float().mean(0) for v in views]  # where the ink is
    assert views.shape == (8, 3, 32, 32) and len({tuple(c.round().tolist()) for c in centres}) > 1


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="bad.png"):
        ImageProcessor(VISION)(bad)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(digit_image()).resize((64, 64)).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.png"):
        ImageProcessor(VISION)(truncated)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_audio_is_resampled_to_the_model_rate(tmp_path, rate, channels):
    n = int(rate * 0.37)
    t = np.arange(n) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    path = tmp_path / f"tone_{rate}.wav"
    soundfile.write(path, np.stack([tone] * channels, 1) if channels == 2 else tone, rate)
    wave, length = AudioProcessor(AudioConfig(sample_rate=16000))(path)
    assert length == wave.shape[0] == math.ceil(n * 16000 / rate)
    assert wave.dtype == torch.float32
    # still a 440 Hz tone of the same loudness
    peak = np.fft.rfftfreq(length, 1 / 16000)[np.abs(np.fft.rfft(wave.numpy())).argmax()]
    assert abs(peak - 440) < 5 and abs(wave[100:-100].abs().max().item() - 0.5) < 0.01


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_flac_and_ogg(tmp_path, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    soundfile.write(path, np.zeros(22050, np.float32), 22050, format=fmt)
    wave, length = AudioProcessor(AudioConfig())(path)
    assert abs(length - 16000) <= 1


def test_array_input_and_mixdown():
    stereo = np.stack([np.ones(800, np.float32), -np.ones(800, np.float32) * 0.5], 1)  # [N, 2]
    wave, length = AudioProcessor(AudioConfig(sample_rate=8000))(stereo, sample_rate=8000)
    assert length == 800 and torch.allclose(wave, torch.full((800,), 0.25))
    assert AudioProcessor(AudioConfig(sample_rate=16000))(stereo)[1] == 800  # already at the model's rate


def test_too_long_and_unreadable_audio(tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(8000 * 3, np.float32), 8000)
    with pytest.raises(ValueError, match=r"long.wav: 3.00 s is longer than audio.max_seconds=2 s"):
        AudioProcessor(AudioConfig(max_seconds=2))(path)
    with pytest.raises(ValueError, match="longer than"):
        AudioProcessor(AudioConfig(max_seconds=2))(np.zeros(8000 * 3), sample_rate=8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match="bad.wav: cannot read audio"):
        AudioProcessor(AudioConfig())(bad)
    with pytest.raises(ValueError, match="missing.wav"):
        AudioProcessor(AudioConfig())(tmp_path / "missing.wav")


def test_speed_perturbation_when_training_only(tmp_path):
    rate, n = 8000, 4000
    path = tmp_path / "tone.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 400 * np.arange(n) / rate).astype(np.float32), rate)
    config = AudioConfig(sample_rate=rate)
    augment = AudioAugment(speed=(0.9, 1.1))
    assert AudioProcessor(config, augment=augment)(path)[1] == n  # evaluation: as recorded
    train = AudioProcessor(config, train=True, augment=augment)
    torch.manual_seed(0)
    lengths = set()
    for _ in range(12):
        wave, length = train(path)
        lengths.add(length)
        peak = np.fft.rfftfreq(length, 1 / rate)[np.abs(np.fft.rfft(wave.numpy())).argmax()]
        assert abs(peak - 400 * n / length) < 5  # faster is shorter and higher, as Kaldi's speed perturbation
    assert lengths == {math.ceil(n / 0.9), math.ceil(n / 1.1)}  # as torchaudio sizes a resampled clip
    with pytest.raises(ValueError, match=r"speed: expected factors between 0.5 and 2.0, got \[3.0\]"):
        AudioProcessor(config, train=True, augment=AudioAugment(speed=(3.0,)))
