"""Sampling groups of responses for RL, and scoring them under a model.

The multimodal prefix and the prompt are encoded once per prompt; the filled KV cache is
then repeated for the G samples of that prompt (`KVCache.repeat_interleave`).

Scoring is on the distribution the samples came from: the rollout's temperature divides the
logits. Sampling runs in eval mode; the RL objectives keep the policy in eval mode for their
updates too (`mmr1.objectives.base.deterministic`), so the first importance ratio is exactly 1
and the KL to an identical reference exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mmr1.model import MultimodalModel, media_inputs
from mmr1.losses.language import token_logprobs


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [B, T] left-padded prompts (one row per prompt, not repeated)
    prompt_mask: torch.Tensor  # [B, T] bool
    completion_ids: torch.Tensor  # [B*G, L] sampled tokens, pad after the eos
    completion_mask: torch.Tensor  # [B*G, L] bool, real tokens through the first eos
    group_size: int
    temperature: float = 1.0  # the sampling temperature, which scoring divides the logits by
    top_k: int = 0  # the sampler's truncation, which scoring refuses (see `check_full_distribution`)
    top_p: float = 1.0

    @property
    def lengths(self) -> torch.Tensor:  # [B*G]
        return self.completion_mask.sum(dim=1)


@torch.no_grad()
def sample_groups(model: MultimodalModel, batch: dict, group_size: int, max_new_tokens: int,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id: int | None = None,
                  generator: torch.Generator | None = None) -> Rollout:
    """G sampled completions for each of the batch's B prompts, in eval mode (no dropout/SpecAugment);
    every module's mode is restored afterwards."""
    modes = {module: module.training for module in model.modules()}
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
        for module, training in modes.items():
            module.training = training
    completion = torch.stack(tokens, dim=1).clone()  # [B*G, L], a normal tensor (not an inference one)
    is_eos = completion == eos
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # positions after the first eos
    return Rollout(ids, mask, completion, ~after_eos, group_size, temperature, top_k, top_p)


def select_groups(batch: dict, rollout: Rollout, prompts: torch.Tensor) -> tuple[dict, Rollout]:
    """The batch and rollout cut to the given prompts [K] (indices into B) and their G responses each, in
    that order: every tensor or list in the batch must hold one row per prompt (ValueError naming it)."""
    B, G = rollout.prompt_ids.shape[0], rollout.group_size
    rows = (prompts[:, None] * G + torch.arange(G, device=prompts.device)).reshape(-1)  # [K*G]
    picked = {}
    for key, value in batch.items():
        if not isinstance(value, (torch.Tensor, list, tuple)) or len(value) != B:
            raise ValueError(f"batch[{key!r}]: expected one row per prompt ({B}) to select groups from, got "
                             f"{type(value).__name__} of {len(value) if hasattr(value, '__len__') else 'no'} rows")
        picked[key] = value[prompts] if isinstance(value, torch.Tensor) else [value[i] for i in prompts.tolist()]
    return picked, replace(rollout, prompt_ids=rollout.prompt_ids[prompts], prompt_mask=rollout.prompt_mask[prompts],
                           completion_ids=rollout.completion_ids[rows], completion_mask=rollout.completion_mask[rows])


@torch.no_grad()
def greedy_completions(model: MultimodalModel, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       batch: dict, max_new_tokens: int) -> list[str]:
    """Greedy answers to left-padded prompts input_ids / attention_mask [B, T] with the batch's media, decoded
    up to the end token: what RL and SFT validation score."""
    out = model.generate(input_ids, attention_mask, generation=dict(max_new_tokens=max_new_tokens,
                                                                    eos_token_id=tokenizer.eos_id),
                         **media_inputs(batch))  # [B, T + new]
    return decode_completions(tokenizer, out[:, input_ids.shape[1]:])


def decode_completions(tokenizer, completion_ids: torch.Tensor) -> list[str]:
    """Each row of sampled ids [N, L] decoded up to (not including) its first end token."""
    eos = tokenizer.eos_id
    return [tokenizer.decode(row[:row.index(eos)] if eos in row else row) for row in completion_ids.tolist()]


def check_full_distribution(top_k: int, top_p: float) -> None:
    """ValueError unless sampling draws from the whole temperature-scaled softmax, the distribution RL
    scores log-probs on: a top-k/top-p truncation depends on the policy, so old, new and reference
    log-probs cannot all be taken on the distribution a token was drawn from."""
    if top_p != 1.0:
        raise ValueError(f"top_p: RL log-probs are taken on the full temperature-scaled distribution; expected "
                         f"1.0, got {top_p}")
    if top_k != 0:
        raise ValueError(f"top_k: RL log-probs are taken on the full temperature-scaled distribution; expected "
                         f"0, got {top_k}")


def micro_batches(total: int, size: int) -> list[slice]:
    """Consecutive row slices of at most `size` rows covering `total` rows."""
    return [slice(start, min(total, start + size)) for start in range(0, total, size)]


def completion_forward(model: MultimodalModel, batch: dict, rollout: Rollout, rows: slice | None = None,
                       share_prompt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The rollout's rows (whole groups) scored under `model`, with grad when grad is enabled: the logits
    [n, L, V] of the distribution each completion token was drawn from (divided by the rollout's
    temperature) and the final states [n, L, D] that drew them. The prefix is encoded once per prompt and
    shared by its G rows.

    share_prompt: the core reads each prompt (with its media prefix) once and its G completions continue from
    that prompt's keys and values (prefix sharing, as sampling does), instead of reading G copies of it: the
    same logits (to float rounding) and gradients, with the prompt's work done once per group. Off for a core
    whose blocks recompute their forward in backward (activation checkpointing), which a cache cannot survive.
    """
    check_full_distribution(rollout.top_k, rollout.top_p)
    G = rollout.group_size
    rows = rows or slice(0, rollout.completion_ids.shape[0])
    if rows.start % G or rows.stop % G:
        raise ValueError(f"rows: a micro-batch must hold whole groups of G={G} sequences, got {rows}")
    prompts = slice(rows.start // G, rows.stop // G)
    media = {k: v[prompts] for k, v in media_inputs(batch).items()}
    completion, completion_mask = rollout.completion_ids[rows], rollout.completion_mask[rows]  # [n, L]
    prompt_ids, prompt_mask = rollout.prompt_ids[prompts], rollout.prompt_mask[prompts]  # [n/G, T]
    L = completion.shape[1]
    prefix = model.prefix(**media)
    prefix_embeds, prefix_mask = (None, None) if prefix is None else (prefix.embeds, prefix.mask)
    if share_prompt:
        P = 0 if prefix is None else prefix_embeds.shape[1]
        cache = model.core.new_cache(P + prompt_ids.shape[1] + L)
        first = model.core(prompt_ids, prompt_mask, prefix_embeds, prefix_mask, cache=cache, logits_to_keep=1)
        logits, hidden = first.logits.repeat_interleave(G, dim=0), first.hidden[:, -1:].repeat_interleave(G, dim=0)
        if L > 1:  # completion tokens 0..L-2 on top of the prompt predict tokens 1..L-1
            rest = model.core(completion[:, :-1], completion_mask[:, :-1], cache=cache.repeat_interleave(G))
            logits, hidden = torch.cat((logits, rest.logits), dim=1), torch.cat((hidden, rest.hidden), dim=1)
        return logits.float() / rollout.temperature, hidden  # [n, L, V], [n, L, D]
    ids = torch.cat((prompt_ids.repeat_interleave(G, dim=0), completion), dim=1)  # [n, T+L]
    mask = torch.cat((prompt_mask.repeat_interleave(G, dim=0), completion_mask), dim=1)
    out = model.core(ids, mask,
                     prefix_embeds=None if prefix is None else prefix_embeds.repeat_interleave(G, dim=0),
                     prefix_mask=None if prefix is None else prefix_mask.repeat_interleave(G, dim=0),
                     logits_to_keep=L + 1)
    logits = out.logits[:, :-1].float() / rollout.temperature  # [n, L, V], at t predicting completion token t
    return logits, out.hidden[:, -(L + 1):-1]  # [n, L, V], [n, L, D]


def completion_logprobs(model: MultimodalModel, batch: dict, rollout: Rollout, rows: slice | None = None,
                        share_prompt: bool = True) -> torch.Tensor:
    """log π(completion tokens) [n, L] for the rollout's rows (whole groups) on the distribution they were
    sampled from (see `completion_forward`), with grad when grad is enabled."""
    rows = rows or slice(0, rollout.completion_ids.shape[0])
    logits, _ = completion_forward(model, batch, rollout, rows, share_prompt)
    return token_logprobs(logits, rollout.completion_ids[rows])


@torch.no_grad()
def rollout_logprobs(model: MultimodalModel, batch: dict, rollout: Rollout, micro_batch_size: int,
                     share_prompt: bool = True) -> torch.Tensor:
    """log π(completion tokens) [N, L] of the whole rollout without grad, scored in the same micro-batches
    (and the same way) as the update, so they equal the update's first log-probs bit for bit."""
    return torch.cat([completion_logprobs(model, batch, rollout, rows, share_prompt)
                      for rows in micro_batches(rollout.completion_ids.shape[0], micro_batch_size)])
