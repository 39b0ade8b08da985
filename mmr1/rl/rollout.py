"""Sampling groups of responses for RL, and scoring them under a model.

The multimodal prefix and the prompt are encoded once per prompt; the filled KV cache is
then repeated for the G samples of that prompt (`KVCache.repeat_interleave`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmr1.model import MultimodalModel, media_inputs
from mmr1.rl.grpo import token_logprobs


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [B, T] left-padded prompts (one row per prompt, not repeated)
    prompt_mask: torch.Tensor  # [B, T] bool
    completion_ids: torch.Tensor  # [B*G, L] sampled tokens, pad after the eos
    completion_mask: torch.Tensor  # [B*G, L] bool, real tokens through the first eos
    group_size: int

    @property
    def lengths(self) -> torch.Tensor:  # [B*G]
        return self.completion_mask.sum(dim=1)


@torch.no_grad()
def sample_groups(model: MultimodalModel, batch: dict, group_size: int, max_new_tokens: int,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id: int | None = None,
                  generator: torch.Generator | None = None) -> Rollout:
    """G sampled completions for each of the batch's B prompts, in eval mode (no dropout/SpecAugment)."""
    was_training = model.training
    model.eval()
    try:
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        prefix = model.prefix(**media_inputs(batch))
        P = 0 if prefix is None else prefix.embeds.shape[1]
        core = model.core
        cache = core.new_cache(P + ids.shape[1] + max_new_tokens)
        out = core(ids, mask, None if prefix is None else prefix.embeds, None if prefix is None else prefix.mask,
                   cache=cache, logits_to_keep=1)
        cache = cache.repeat_interleave(group_size)
        logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)  # [B*G, V]
        eos = core.config.eos_token_id if eos_token_id is None else eos_token_id
        tokens = list(core.decode(cache, logits, max_new_tokens, do_sample=True, temperature=temperature,
                                  top_k=top_k, top_p=top_p, eos_token_id=eos, generator=generator))
    finally:
        model.train(was_training)
    completion = torch.stack(tokens, dim=1).clone()  # [B*G, L], a normal tensor (not an inference one)
    is_eos = completion == eos
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # positions after the first eos
    return Rollout(ids, mask, completion, ~after_eos, group_size)


def decode_completions(tokenizer, completion_ids: torch.Tensor) -> list[str]:
    """Each row of sampled ids [N, L] decoded up to (not including) its first end token."""
    eos = tokenizer.eos_id
    return [tokenizer.decode(row[:row.index(eos)] if eos in row else row) for row in completion_ids.tolist()]


def completion_logprobs(model: MultimodalModel, batch: dict, rollout: Rollout,
                        rows: slice | None = None) -> torch.Tensor:
    """log π(completion tokens) [n, L] for the rollout's rows (a slice of whole groups), with grad
    when grad is enabled. The prefix is encoded once per prompt and shared by its G rows."""
    G = rollout.group_size
    rows = rows or slice(0, rollout.completion_ids.shape[0])
    if rows.start % G or rows.stop % G:
        raise ValueError(f"rows: a micro-batch must hold whole groups of G={G} sequences, got {rows}")
    prompts = slice(rows.start // G, rows.stop // G)
    media = {k: v[prompts] for k, v in media_inputs(batch).items()}
    prefix = model.prefix(**media)
    completion, completion_mask = rollout.completion_ids[rows], rollout.completion_mask[rows]  # [n, L]
    ids = torch.cat((rollout.prompt_ids[prompts].repeat_interleave(G, dim=0), completion), dim=1)  # [n, T+L]
    mask = torch.cat((rollout.prompt_mask[prompts].repeat_interleave(G, dim=0), completion_mask), dim=1)
    L = completion.shape[1]
    out = model.core(ids, mask,
                     prefix_embeds=None if prefix is None else prefix.embeds.repeat_interleave(G, dim=0),
                     prefix_mask=None if prefix is None else prefix.mask.repeat_interleave(G, dim=0),
                     logits_to_keep=L + 1)
    return token_logprobs(out.logits[:, :-1], completion)  # logits at t predict token t+1
