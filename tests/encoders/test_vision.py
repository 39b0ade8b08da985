"""VisionEncoder: timm ViTs on real images, weight loading, absent images, input checks."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from mmr1.config import VisionConfig
from mmr1.encoders.vision import VisionEncoder


def digit_images(n: int, size: int = 32) -> torch.Tensor:
    """The first n of sklearn's bundled 8×8 handwritten digits, upscaled to RGB [n, 3, size, size] in [-1, 1]."""
    images = torch.tensor(load_digits().images[:n], dtype=torch.float32) / 16  # [n, 8, 8] in [0, 1]
    images = F.interpolate(images[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return (images.expand(-1, 3, -1, -1) - 0.5) / 0.5


def test_forward_backward_on_real_digits():
    torch.manual_seed(0)
    cfg = VisionConfig(image_size=32, patch_size=8, width=64, depth=2, n_heads=2)
    encoder = VisionEncoder(cfg)
    images = digit_images(4)

    out = encoder(images)

    assert encoder.width == 64
    assert out.tokens.shape == (4, cfg.n_patches, 64) and cfg.n_patches == (32 // 8) ** 2
    assert out.mask.all() and out.pooled.shape == (4, 64)
    features = encoder.model.forward_features(images)  # [B, 1 + N, D]: the class token comes first
    torch.testing.assert_close(out.tokens, features[:, 1:])
    torch.testing.assert_close(out.pooled, features[:, 0])  # global_pool="token"
    assert not torch.allclose(out.pooled[0], out.pooled[1])  # different digits, different embeddings
    (out.tokens.square().mean() + out.pooled.square().mean()).backward()
    grad = encoder.model.patch_embed.proj.weight.grad
    assert grad is not None and grad.isfinite().all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name, n_prefix, width", [
    ("vit_tiny_patch16_224", 1, 192),  # class token
    ("vit_little_patch16_reg4_gap_256", 4, 320),  # four register tokens, no class token
])
def test_named_timm_model_drops_prefix_tokens(name, n_prefix, width):
    encoder = VisionEncoder(VisionConfig(timm_name=name, image_size=32))
    images = digit_images(2)

    out = encoder(images)

    assert encoder.model.num_prefix_tokens == n_prefix and encoder.width == width
    assert out.tokens.shape == (2, (32 // 16) ** 2, width) and out.pooled.shape == (2, width)
    assert encoder.grid == (2, 2)
    torch.testing.assert_close(out.tokens, encoder.model.forward_features(images)[:, n_prefix:])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_weights_round_trip(tmp_path, suffix):
    cfg = VisionConfig(image_size=16, patch_size=8, width=32, depth=1, n_heads=2)
    torch.manual_seed(0)
    source = VisionEncoder(cfg).eval()
    path = tmp_path / f"vit{suffix}"
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(1)
    target = VisionEncoder(cfg).eval()
    images = digit_images(2, size=16)
    assert not torch.allclose(target(images).tokens, source(images).tokens)

    target.load_weights(path)

    torch.testing.assert_close(target(images).tokens, source(images).tokens)
    from_config = VisionEncoder(VisionConfig(**{**vars(cfg), "weights": str(path)})).eval()
    torch.testing.assert_close(from_config(images).pooled, source(images).pooled)


def test_load_weights_rejects_a_mismatched_state_dict(tmp_path):
    cfg = VisionConfig(image_size=16, patch_size=8, width=32, depth=1, n_heads=2)
    encoder = VisionEncoder(cfg)
    wider = VisionEncoder(VisionConfig(image_size=16, patch_size=8, width=64, depth=1, n_heads=2))
    state = dict(encoder.model.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["norm.bias"]
    cases = {
        "shape mismatch keys ['blocks.0.attn.proj.bias'": wider.model.state_dict(),
        "unexpected keys ['extra.weight']": state,
        "missing keys ['norm.bias']": state,
    }
    for message, bad in cases.items():
        path = tmp_path / "bad.safetensors"
        save_file({k: v.contiguous() for k, v in bad.items()}, str(path))
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            encoder.load_weights(path)
    with pytest.raises(ValueError, match="expected a .safetensors"):
        encoder.load_weights(tmp_path / "weights.bin")


def test_image_mask_marks_absent_images():
    encoder = VisionEncoder(VisionConfig(image_size=16, patch_size=8, width=32, depth=1, n_heads=2))

    out = encoder(digit_images(3, size=16), image_mask=torch.tensor([True, False, True]))

    assert out.mask[[0, 2]].all() and not out.mask[1].any()
    assert out.present.tolist() == [True, False, True]
    assert (out.pooled[1] == 0).all() and (out.pooled[0] != 0).any()


@pytest.mark.parametrize("pixel_values", [
    torch.zeros(3, 16, 16),  # no batch dimension
    torch.zeros(2, 1, 16, 16),  # grey
    torch.zeros(2, 3, 32, 32),  # wrong size
    torch.zeros(2, 3, 16, 16, dtype=torch.uint8),  # not float
    torch.zeros(0, 3, 16, 16),  # empty batch
])
def test_bad_pixel_values_raise(pixel_values):
    encoder = VisionEncoder(VisionConfig(image_size=16, patch_size=8, width=32, depth=1, n_heads=2))
    with pytest.raises(ValueError, match=r"pixel_values: expected float \[B, 3, 16, 16\]"):
        encoder(pixel_values)


def test_bad_image_mask_raises():
    encoder = VisionEncoder(VisionConfig(image_size=16, patch_size=8, width=32, depth=1, n_heads=2))
    with pytest.raises(ValueError, match=r"image_mask: expected bool \[2\]"):
        encoder(torch.zeros(2, 3, 16, 16), image_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="image_mask"):
        encoder(torch.zeros(2, 3, 16, 16), image_mask=torch.ones(2))


def test_conv_stem_embeds_patches_with_convolutions():
    """stem: conv replaces the linear patch projection by timm's ConvStem (LayerNorm, so train == eval)."""
    torch.manual_seed(0)
    cfg = VisionConfig(image_size=32, patch_size=8, width=64, depth=2, n_heads=2, stem="conv")
    encoder = VisionEncoder(cfg)
    images = digit_images(4)
    out = encoder.train()(images)
    assert out.tokens.shape == (4, cfg.n_patches, 64) and encoder.grid == (4, 4)
    torch.testing.assert_close(encoder.eval()(images).tokens, out.tokens)  # no batch statistics
    convs = [m for m in encoder.model.patch_embed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 3  # 32 -> 16 -> 8 -> 4: the 4×4 patch grid
    out.tokens.square().mean().backward()
    assert convs[0].weight.grad.abs().sum() > 0


def test_avg_pool_is_the_mean_patch_token_and_tells_images_apart_from_the_start():
    """pool: avg drops the class token; the pooled state is the mean of the (normalised) patch tokens. At
    initialisation it differs more between digits than the class token's, whose near-constant output is
    where contrastive alignment of a ViT trained from scratch can sit for hundreds of steps."""
    images = digit_images(8)
    pooled = {}
    for pool in ("token", "avg"):
        torch.manual_seed(0)
        encoder = VisionEncoder(VisionConfig(stem="conv", pool=pool)).eval()
        out = encoder(images)
        assert out.tokens.shape == (8, 16, 64) and encoder.model.num_prefix_tokens == (pool == "token")
        pooled[pool] = F.normalize(out.pooled, dim=-1)
        if pool == "avg":
            torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    off_diagonal = ~torch.eye(8, dtype=torch.bool)
    similarity = {pool: (p @ p.T)[off_diagonal].mean() for pool, p in pooled.items()}
    assert similarity["avg"] < similarity["token"] - 0.01, similarity  # 0.966 vs 0.986


def test_keep_class_token_passes_the_aligned_state_on_in_front_of_the_patch_tokens():
    """keep_class_token: the class token, which is the pooled state the contrastive stage aligns, goes on to
    fusion first; the patch tokens after it are the ones the encoder gives without the option."""
    images = digit_images(4)
    outputs = {}
    for keep in (False, True):
        torch.manual_seed(0)
        encoder = VisionEncoder(VisionConfig(stem="conv", keep_class_token=keep)).eval()
        outputs[keep] = encoder(images, torch.tensor([True, True, False, True]))
    kept, patches = outputs[True], outputs[False]
    assert kept.tokens.shape == (4, 1 + 16, 64) and kept.mask.shape == (4, 17)
    torch.testing.assert_close(kept.tokens[:, 1:], patches.tokens)
    torch.testing.assert_close(kept.tokens[[0, 1, 3], 0], kept.pooled[[0, 1, 3]])
    assert kept.mask[2].logical_not().all() and kept.mask[[0, 1, 3]].all()
    with pytest.raises(ValueError, match="vision.keep_class_token: vit_little_patch16_reg4_gap_256 has no class token"):
        VisionEncoder(VisionConfig(timm_name="vit_little_patch16_reg4_gap_256", image_size=32, keep_class_token=True))


@pytest.mark.parametrize("fields, message", [
    (dict(pool="avg", keep_class_token=True), "vision.keep_class_token"),
    (dict(pool="max"), "vision.pool"),
    (dict(stem="conv", patch_size=6, image_size=36), "power of two"),
    (dict(stem="conv", timm_name="vit_tiny_patch16_224"), "timm_name"),
    (dict(stem="unet"), "vision.stem"),
])
def test_conv_stem_settings_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        VisionConfig(**fields)
