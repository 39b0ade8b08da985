import torch
from torch.testing import assert_close

from mmr1.fusion.resampler import PerceiverResampler


def test_bounds_tokens_and_marks_absent_samples():
    resampler = PerceiverResampler(16, 4, n_latents=3)
    tokens = torch.randn(3, 11, 16, requires_grad=True)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2] = False
    latents, latent_mask = resampler(tokens, mask)
    assert latents.shape == (3, 3, 16)
    assert latent_mask.tolist() == [[True] * 3, [True] * 3, [False] * 3]
    latents.sum().backward()
    assert torch.isfinite(tokens.grad).all()
    assert tokens.grad[1, 6:].abs().sum() == 0 and tokens.grad[2].abs().sum() == 0


def test_padding_is_ignored():
    resampler = PerceiverResampler(16, 4, n_latents=3)
    tokens = torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    changed = tokens.clone()
    changed[1, 4:] = -30.0
    assert_close(resampler(changed, mask)[0], resampler(tokens, mask)[0], atol=0, rtol=0)
