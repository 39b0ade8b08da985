import itertools

import pytest
import torch
from torch.testing import assert_close

from mmr1.config import FusionConfig
from mmr1.encoders.output import EncoderOutput
from mmr1.fusion import Fusion, Gate

WIDTHS = {"image": 24, "audio": 12, "text": 20}
LENGTHS = {"image": 4, "audio": 6, "text": 5}


def encoder_output(B: int, length: int, width: int, n_real: list[int]) -> EncoderOutput:
    """n_real[b] real tokens for sample b, then padding (0 = the modality is absent for b)."""
    mask = torch.arange(length)[None, :] < torch.tensor(n_real)[:, None]  # [B, L]
    return EncoderOutput(torch.randn(B, length, width), mask, torch.randn(B, width))


def batch(names=("image", "audio", "text"), B: int = 3) -> dict[str, EncoderOutput]:
    """Sample 0 has everything, sample 1 has padding, sample 2 lacks audio."""
    n_real = {"image": [4, 4, 4], "audio": [6, 3, 0], "text": [5, 2, 5]}
    return {m: encoder_output(B, LENGTHS[m], WIDTHS[m], n_real[m][:B]) for m in names}


def make_fusion(**cfg) -> Fusion:
    torch.manual_seed(0)
    return Fusion(FusionConfig(width=32, n_heads=4, **cfg), WIDTHS)


def open_gates(fusion: Fusion) -> Fusion:
    """Stand in for a trained model: every gate open by a random amount."""
    for gate in (m for m in fusion.modules() if isinstance(m, Gate)):
        torch.nn.init.normal_(gate.alpha)
    return fusion


def test_pairwise_and_hierarchical_are_identity_at_init():
    fusion = make_fusion(hierarchical=True)
    inputs = batch()
    out = fusion(inputs)
    expected = []
    for m in ("image", "audio", "text"):
        projected = fusion.input_proj[m](inputs[m].tokens) + fusion.type_embed[m]
        expected.append(projected.masked_fill(~inputs[m].mask[..., None], 0.0))
    assert_close(out.tokens, torch.cat(expected, dim=1), atol=0, rtol=0)
    assert torch.equal(out.mask, torch.cat([inputs[m].mask for m in ("image", "audio", "text")], dim=1))
    assert out.spans == {"image": (0, 4), "audio": (4, 10), "text": (10, 15)}
    assert fusion.output_width == 32


def test_every_gate_gets_gradient_at_init():
    fusion = make_fusion(hierarchical=True)
    fusion(batch()).tokens.square().sum().backward()
    gates = [m for m in fusion.modules() if isinstance(m, Gate)]
    assert len(gates) == 6 + 2  # six ordered pairs + hierarchical attention and FFN
    for gate in gates:
        assert gate.alpha.grad.abs().sum() > 0


def test_training_moves_output_away_from_input():
    fusion = make_fusion(hierarchical=True)
    inputs = batch()
    optimizer = torch.optim.Adam(fusion.parameters(), lr=1e-2)
    for _ in range(3):
        out = fusion(inputs)
        loss = (out.tokens - 1.0).square()[out.mask].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        tokens, _ = fusion.embed(inputs)
        out = fusion(inputs)
    assert not torch.allclose(out.tokens, torch.cat(list(tokens.values()), dim=1))


@pytest.mark.parametrize("resampler_tokens", [0, 3])
@pytest.mark.parametrize(
    "names", [c for r in (1, 2, 3) for c in itertools.combinations(("image", "audio", "text"), r)], ids=str
)
def test_every_subset_runs_forward_and_backward(names, resampler_tokens):
    fusion = open_gates(make_fusion(resampler_tokens=resampler_tokens))
    inputs = batch(names)
    out = fusion(inputs)
    lengths = [resampler_tokens or LENGTHS[m] for m in names]
    assert out.tokens.shape == (3, sum(lengths), 32) and out.mask.shape == (3, sum(lengths))
    assert list(out.spans) == list(names)
    assert [end - start for start, end in out.spans.values()] == lengths
    out.tokens[out.mask].sum().backward()
    assert torch.isfinite(out.tokens).all()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


@pytest.mark.parametrize("resampler_tokens", [0, 3])
def test_padded_tokens_change_nothing(resampler_tokens):
    fusion = open_gates(make_fusion(resampler_tokens=resampler_tokens))
    inputs = batch()
    reference = fusion(inputs).tokens
    for m in inputs:
        changed = dict(inputs)
        tokens = inputs[m].tokens.clone()
        tokens[~inputs[m].mask] = 1e3
        changed[m] = EncoderOutput(tokens, inputs[m].mask, inputs[m].pooled)
        assert_close(fusion(changed).tokens, reference, atol=0, rtol=0)


@pytest.mark.parametrize("resampler_tokens", [0, 3])
def test_absent_audio_is_as_if_audio_not_passed(resampler_tokens):
    fusion = open_gates(make_fusion(resampler_tokens=resampler_tokens))
    inputs = batch()  # sample 2 has no audio
    with_audio = fusion(inputs)
    without = fusion({m: inputs[m] for m in ("image", "text")})
    for m in ("image", "text"):
        (a, b), (c, d) = with_audio.spans[m], without.spans[m]
        assert_close(with_audio.tokens[2, a:b], without.tokens[2, c:d], atol=1e-6, rtol=0)
        assert not torch.allclose(with_audio.tokens[0, a:b], without.tokens[0, c:d])
    a, b = with_audio.spans["audio"]
    assert not with_audio.mask[2, a:b].any()


def test_resampler_bounds_tokens_per_modality():
    fusion = make_fusion(resampler_tokens=2)
    out = fusion(batch())
    assert out.spans == {"image": (0, 2), "audio": (2, 4), "text": (4, 6)}
    assert out.mask.tolist() == [[True] * 6, [True] * 6, [True, True, False, False, True, True]]


def test_errors_name_the_problem():
    fusion = Fusion(FusionConfig(width=32, n_heads=4), {"image": 24, "text": 20})
    inputs = batch()
    with pytest.raises(ValueError, match=r"audio.*configured.*'image', 'text'"):
        fusion(inputs)
    with pytest.raises(ValueError, match="no modality"):
        fusion({})
    with pytest.raises(ValueError, match=r"text: expected tokens \[B=3, L, 20\], got \[2, 5, 20\]"):
        fusion({"image": inputs["image"], "text": batch(("text",), B=2)["text"]})
    wrong_width = EncoderOutput(torch.randn(3, 5, 7), inputs["text"].mask, torch.randn(3, 7))
    with pytest.raises(ValueError, match=r"text: expected tokens \[B=3, L, 20\], got \[3, 5, 7\]"):
        fusion({"image": inputs["image"], "text": wrong_width})
    with pytest.raises(ValueError, match="video"):
        Fusion(FusionConfig(), {"video": 8})


def test_image_positions_add_each_patch_tokens_row_and_column():
    """A 2×2 patch grid: the projected image tokens get timm's 2-D sin-cos embedding, row-major; the other
    modalities are untouched, and a token's row and column can be read back from what was added."""
    inputs = batch()
    plain, placed = make_fusion(), Fusion(FusionConfig(width=32, n_heads=4, image_positions=True), WIDTHS, (2, 2))
    placed.load_state_dict(plain.state_dict())  # the positions are a buffer, not a weight
    torch.manual_seed(0)
    added = placed.embed(inputs)[0]["image"] - plain.embed(inputs)[0]["image"]  # [B, 4, 32]
    from timm.layers import build_sincos2d_pos_embed
    assert_close(added, build_sincos2d_pos_embed([2, 2], dim=32).expand_as(added))
    assert len({tuple(row.tolist()) for row in added[0].round(decimals=4)}) == 4  # four different positions
    for m in ("audio", "text"):
        assert torch.equal(placed.embed(inputs)[0][m], plain.embed(inputs)[0][m])


def test_image_positions_skip_a_class_token_and_check_the_grid():
    inputs = {"image": encoder_output(2, 5, 24, [5, 5])}  # a class token, then 4 patch tokens
    fusion = Fusion(FusionConfig(width=32, n_heads=4, image_positions=True), {"image": 24}, (2, 2))
    plain = Fusion(FusionConfig(width=32, n_heads=4), {"image": 24})
    plain.load_state_dict(fusion.state_dict())
    added = fusion.embed(inputs)[0]["image"] - plain.embed(inputs)[0]["image"]  # [2, 5, 32]
    assert torch.equal(added[:, 0], torch.zeros_like(added[:, 0]))  # the class token has no place
    assert added[:, 1:].abs().sum() > 0
    with pytest.raises(ValueError, match=r"image: fusion.image_positions expects 4 patch tokens .* got 6"):
        fusion({"image": encoder_output(2, 6, 24, [6, 6])})
    with pytest.raises(ValueError, match=r"fusion.image_positions: needs the image encoder's patch grid"):
        Fusion(FusionConfig(width=32, n_heads=4, image_positions=True), {"image": 24})
    with pytest.raises(ValueError, match=r"fusion.image_positions: needs fusion.width divisible by 4"):
        FusionConfig(width=30, n_heads=2, image_positions=True)
