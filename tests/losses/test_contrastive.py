"""The contrastive loss (gathered across simulated ranks) and retrieval recall."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmr1.losses.contrastive import clip_loss, recall_at_1


def fake_gather(others: list[torch.Tensor], rank: int):
    """all_gather with grad, seen from one of 2 simulated ranks: call i fills the other rank's slot with others[i]."""
    calls = iter(others)

    def gather(x: torch.Tensor) -> list[torch.Tensor]:
        other = next(calls)
        return [x, other] if rank == 0 else [other, x]
    return gather


def test_gathered_clip_loss_equals_single_process_loss():
    torch.manual_seed(0)
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(8, 16, requires_grad=True)
    scale = torch.tensor(math.log(1 / 0.07))
    single = clip_loss(a, b, scale)
    single_grad = torch.autograd.grad(single, (a, b))

    a_parts, b_parts = a.chunk(2), b.chunk(2)
    losses = []
    for rank in range(2):
        other = [F.normalize(a_parts[1 - rank], dim=-1), F.normalize(b_parts[1 - rank], dim=-1)]  # its features
        losses.append(clip_loss(a_parts[rank], b_parts[rank], scale, rank, 2, gather=fake_gather(other, rank)))
    gathered = torch.stack(losses).mean()
    torch.testing.assert_close(gathered, single)
    for got, want in zip(torch.autograd.grad(gathered, (a, b)), single_grad):
        torch.testing.assert_close(got, want)


def test_gathered_negatives_change_the_loss():
    """Each rank must see the other rank's rows as negatives, not only its own."""
    torch.manual_seed(1)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(2.0)
    local = clip_loss(a[:2], b[:2], scale)
    other = [F.normalize(a[2:], dim=-1), F.normalize(b[2:], dim=-1)]
    gathered = clip_loss(a[:2], b[:2], scale, 0, 2, gather=fake_gather(other, 0))
    assert not torch.isclose(local, gathered)


def test_clip_loss_is_symmetric_infonce_with_clamped_temperature():
    torch.manual_seed(2)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    logits = 100.0 * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    want = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    torch.testing.assert_close(clip_loss(a, b, torch.tensor(10.0)), want)  # e^10 is clamped to 100


def test_clip_temperature_gets_a_gradient_below_the_clamp():
    scale = torch.tensor(1.0, requires_grad=True)
    clip_loss(torch.randn(4, 8), torch.randn(4, 8), scale).backward()
    assert scale.grad is not None and scale.grad != 0


def test_recall_at_1_counts_own_pairs():
    a = torch.eye(4)
    b = torch.eye(4)[[0, 1, 3, 2]]
    assert recall_at_1(a, a) == (1.0, 1.0)
    assert recall_at_1(a, b) == (0.5, 0.5)


def test_hard_negatives_are_extra_columns_of_their_own_row_only():
    """NegCLIP: a→b cross-entropy over the batch's b plus the row's own hard negatives; b→a unchanged."""
    torch.manual_seed(3)
    a, b, negatives = torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8)
    rows = torch.tensor([0, 0, 2])
    scale = torch.tensor(1.5)
    an, bn, nn_ = (F.normalize(x, dim=-1) for x in (a, b, negatives))
    logits = scale.exp() * an @ bn.T  # [4, 4]
    hard = scale.exp() * an @ nn_.T  # [4, 3]
    hard = hard.masked_fill(rows[None, :] != torch.arange(4)[:, None], float("-inf"))
    a2b = F.cross_entropy(torch.cat([logits, hard], 1), torch.arange(4))
    want = (a2b + F.cross_entropy(logits.T, torch.arange(4))) / 2
    torch.testing.assert_close(clip_loss(a, b, scale, b_negatives=negatives, negative_rows=rows), want)
    # a negative equal to row 1's own caption: that row's a→b term rises by log(1 + p), p its softmax probability
    same = clip_loss(a, b, scale, b_negatives=b[1:2], negative_rows=torch.tensor([1]))
    p = logits[1].softmax(0)[1]
    torch.testing.assert_close(same - clip_loss(a, b, scale), torch.log1p(p) / 4 / 2)


def test_hard_negatives_need_their_rows():
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="negative_rows"):
        clip_loss(a, b, torch.tensor(1.0), b_negatives=torch.randn(2, 4), negative_rows=torch.tensor([0]))


def test_rows_holding_one_text_are_each_other_s_positives():
    """UniCL: with b_keys, each row's target is spread over every column holding its text, in both directions."""
    torch.manual_seed(4)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    keys = torch.tensor([7, 3, 7, 9, 7])  # rows 0, 2 and 4 hold one text
    scale = torch.tensor(1.2)
    logits = scale.exp() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # [5, 5]
    targets = (keys[:, None] == keys[None, :]).float()
    targets = targets / targets.sum(1, keepdim=True)
    want = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(clip_loss(a, b, scale, b_keys=keys), want)
    assert not torch.isclose(clip_loss(a, b, scale, b_keys=keys), clip_loss(a, b, scale))
    # no repeated text: CLIP's loss exactly
    torch.testing.assert_close(clip_loss(a, b, scale, b_keys=torch.arange(5) * 11), clip_loss(a, b, scale))
    # a padding row is no one's positive
    valid = torch.tensor([True, True, False, True, True])
    kept = [0, 1, 3, 4]
    torch.testing.assert_close(clip_loss(a, b, scale, valid=valid, b_keys=keys),
                               clip_loss(a[kept], b[kept], scale, b_keys=keys[kept]))
    with pytest.raises(ValueError, match="b_keys"):
        clip_loss(a, b, scale, b_keys=keys[:3])


def test_gathered_repeated_texts_equal_the_single_process_loss():
    torch.manual_seed(5)
    a, b = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    keys = torch.tensor([1, 2, 3, 2, 1, 4])  # repeats that cross the two ranks' halves
    scale = torch.tensor(1.0)
    single = clip_loss(a, b, scale, b_keys=keys)
    losses = []
    for rank in range(2):
        mine, theirs = slice(3 * rank, 3 * rank + 3), slice(3 - 3 * rank, 6 - 3 * rank)
        other = [F.normalize(a[theirs], dim=-1), F.normalize(b[theirs], dim=-1), keys[theirs]]
        losses.append(clip_loss(a[mine], b[mine], scale, rank, 2, gather=fake_gather(other, rank), b_keys=keys[mine]))
    torch.testing.assert_close(torch.stack(losses).mean(), single)


def test_recall_at_1_counts_a_partner_holding_the_same_text():
    a = torch.eye(3)
    b = torch.eye(3)[[0, 0, 2]]  # rows 0 and 1 hold one text; row 1's nearest partner is row 0
    assert recall_at_1(a, b) == (2 / 3, 2 / 3)
    assert recall_at_1(a, b, torch.tensor([5, 5, 6])) == (1.0, 1.0)
