"""Rollouts: sampling groups of responses and scoring them under the model."""

import pytest
import torch

from mmr1.config import Config
from mmr1.model import MultimodalModel
from mmr1.rl.rollout import completion_forward, completion_logprobs, sample_groups


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


@pytest.mark.parametrize("core", [{}, dict(attention="mla", q_lora_rank=24, n_refine_iters=1, n_routed_experts=4)])
def test_shared_prompt_scoring_equals_reading_every_copy_of_the_prompt(core):
    """Prefix sharing: each prompt read once, its G completions continuing from its keys and values, gives the
    logits, final states and gradients of reading G copies of prompt + completion (left padding, media prefix,
    completions that stop early)."""
    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny", core=core)).eval()
    B, G = 2, 3
    batch = batch_of(B)
    rollout = sample_groups(model, batch, G, max_new_tokens=6, eos_token_id=2, generator=torch.Generator().manual_seed(3))
    rollout.completion_mask[1, 3:] = False  # one completion stopped early: its later tokens are padding
    results = []
    for share in (True, False):
        model.zero_grad()
        logits, hidden = completion_forward(model, batch, rollout, share_prompt=share)
        (logits.log_softmax(-1).amax(-1) * rollout.completion_mask).sum().backward()
        results.append((logits, hidden, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (shared, shared_hidden, shared_grads), (full, full_hidden, full_grads) = results
    m = rollout.completion_mask
    torch.testing.assert_close(shared[m], full[m], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(shared_hidden[m], full_hidden[m], atol=1e-4, rtol=1e-4)
    assert shared_grads.keys() == full_grads.keys() and len(full_grads) > 10
    for name, grad in full_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-4, rtol=1e-3, msg=name)
