"""Rollouts: sampling groups of responses and scoring them under the model."""

import pytest
import torch

from mmr1.config import Config
from mmr1.model import MultimodalModel
from mmr1.rl.rollout import completion_logprobs, sample_groups


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultimodalModel(Config.from_name("tiny")).eval()


def batch_of(B: int) -> dict:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(B, 6, dtype=torch.bool)
    mask[0, :2] = False  # left padding
    return {"input_ids": torch.randint(11, 434, (B, 6), generator=g), "attention_mask": mask,
            "pixel_values": torch.randn(B, 3, 32, 32, generator=g), "image_mask": torch.ones(B, dtype=torch.bool),
            "audio_values": torch.randn(B, 4000, generator=g) * 0.1, "audio_lengths": torch.tensor([4000, 2500][:B])}


def test_shared_prompt_cache_samples_like_repeated_prompts(model):
    B, G = 2, 3
    batch = batch_of(B)
    rollout = sample_groups(model, batch, G, max_new_tokens=7, eos_token_id=2,
                            generator=torch.Generator().manual_seed(5))
    repeated = {k: v.repeat_interleave(G, dim=0) for k, v in batch.items()}
    ids = repeated.pop("input_ids")
    expected = model.generate(ids, repeated.pop("attention_mask"), generation=dict(
        max_new_tokens=7, do_sample=True, eos_token_id=2, generator=torch.Generator().manual_seed(5)), **repeated)
    L = rollout.completion_ids.shape[1]
    assert torch.equal(rollout.completion_ids, expected[:, 6:6 + L])
    assert rollout.completion_ids.shape[0] == B * G


def test_completion_logprobs_per_micro_batch_equal_whole_batch_and_reach_the_encoders(model):
    B, G = 2, 2
    batch = batch_of(B)
    rollout = sample_groups(model, batch, G, max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    whole = completion_logprobs(model, batch, rollout)
    parts = torch.cat([completion_logprobs(model, batch, rollout, slice(i, i + G)) for i in range(0, B * G, G)])
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)
    whole[rollout.completion_mask].sum().backward()
    assert model.vision.model.patch_embed.proj.weight.grad.abs().sum() > 0
    model.zero_grad()
    with pytest.raises(ValueError, match="whole groups"):
        completion_logprobs(model, batch, rollout, slice(1, 3))
