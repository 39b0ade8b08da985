"""Masked image and audio modelling losses."""

import pytest
import torch

from mmr1.losses.masked import masked_regression_loss, normalised_patches


def test_masked_regression_averages_masked_items_only():
    pred, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_regression_loss(pred, target, mask) == pytest.approx(5.0)


def test_normalised_patches_order_and_statistics():
    pixels = torch.randn(2, 3, 8, 8)
    patches = normalised_patches(pixels, 4)  # [2, 4, 48]
    assert patches.shape == (2, 4, 48)
    raw = pixels[1, :, 4:8, 0:4].permute(1, 2, 0).reshape(-1)  # third patch, (row, col, channel) order
    torch.testing.assert_close(patches[1, 2], (raw - raw.mean()) / (raw.var() + 1e-6).sqrt())
