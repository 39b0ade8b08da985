import torch
from torch.testing import assert_close

from mmr1.fusion.gate import Gate


def test_closed_at_init_and_alpha_gets_gradient():
    gate = Gate(8)
    hidden, update = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out = gate(hidden, update)
    assert_close(out, hidden, atol=0, rtol=0)
    out.square().sum().backward()
    assert gate.alpha.grad.abs().sum() > 0


def test_formula_and_absent_samples_keep_hidden():
    gate = Gate(8)
    torch.nn.init.normal_(gate.alpha)
    hidden, update = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    g = torch.tanh(gate.alpha) * torch.sigmoid(gate.score(torch.cat([hidden, update], -1)))
    assert_close(gate(hidden, update), (1 - g) * hidden + g * gate.proj(update))
    out = gate(hidden, update, present=torch.tensor([True, False]))
    assert_close(out[1], hidden[1], atol=0, rtol=0)
    assert not torch.allclose(out[0], hidden[0])
