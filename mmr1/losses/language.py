"""Next-token and masked-token cross-entropy: SFT, causal-LM pretraining, MLM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label of positions outside the loss (the collator writes it, every token loss skips it)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE of logits [..., V] against labels [...] where labels != -100; 0 (with grad) when none are."""
    valid = labels != IGNORE
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), labels[valid])


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE: logits [B, T, V] at t predict labels [B, T] at t + 1 (labels unshifted, -100 ignored)."""
    return token_cross_entropy(logits[:, :-1], labels[:, 1:])


def mlm_loss(logits: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """Masked-language-model CE: logits [B, L, V] at each masked position against text_labels [B, L]."""
    return token_cross_entropy(logits, text_labels)


def token_bag(ids: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Each row's bag of tokens [B, V]: its distinct real tokens (ids / mask [B, L]), equal shares summing to 1;
    a row without real tokens is all zeros."""
    counts = torch.zeros(ids.shape[0], vocab_size, device=ids.device).scatter_add_(1, ids, mask.float())
    bag = (counts > 0).float()  # [B, V] multi-hot (padding adds 0)
    return bag / bag.sum(-1, keepdim=True).clamp(min=1)


def bag_of_tokens_loss(log_probs: torch.Tensor, bag: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of distributions log_probs [N, V] against bags of tokens [N, V] (`token_bag`), mean over N."""
    return -(bag * log_probs.float()).sum(-1).mean()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: logits [N, L, V] predicting tokens [N, L] -> [N, L]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None])[..., 0]
