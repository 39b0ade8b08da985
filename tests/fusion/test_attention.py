import torch
from torch.testing import assert_close

from mmr1.fusion.attention import GatedCrossAttention, MaskedCrossAttention


def reference(attn: MaskedCrossAttention, x, context, mask):
    """Naive softmax attention, per head."""
    B, L, D = x.shape
    H = attn.n_heads
    q = attn.query(attn.norm_query(x)).view(B, L, H, -1).transpose(1, 2)
    k, v = attn.key_value(attn.norm_key(context)).view(B, -1, 2, H, D // H).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) / (D // H) ** 0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, D))


def test_matches_reference_and_ignores_masked_keys():
    attn = MaskedCrossAttention(16, 4)
    x, context = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    mask = torch.tensor([[True] * 6, [True, True, False, True, False, False]])
    out = attn(x, context, mask)
    assert_close(out, reference(attn, x, context, mask))
    changed = context.clone()
    changed[1, 2] = 100.0
    assert_close(attn(x, changed, mask), out, atol=0, rtol=0)


def test_sample_without_keys_reads_zeros_and_gate_keeps_queries():
    block = GatedCrossAttention(16, 4)
    torch.nn.init.normal_(block.gate.alpha)
    x, context = torch.randn(2, 3, 16, requires_grad=True), torch.randn(2, 6, 16)
    mask = torch.tensor([[True] * 4 + [False] * 2, [False] * 6])
    read = block.attn(x, context, mask)
    assert_close(read[1], torch.zeros(3, 16), atol=0, rtol=0)
    out = block(x, context, mask)
    assert_close(out[1], x[1], atol=0, rtol=0)
    assert not torch.allclose(out[0], x[0])
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_gated_block_is_identity_at_init():
    block = GatedCrossAttention(16, 4)
    x = torch.randn(2, 3, 16)
    assert_close(block(x, torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)), x, atol=0, rtol=0)
