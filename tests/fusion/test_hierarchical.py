import torch
from torch.testing import assert_close

from mmr1.fusion.gate import Gate
from mmr1.fusion.hierarchical import HierarchicalFusion


def test_identity_at_init_then_learns_from_context():
    layer = HierarchicalFusion(16, 4)
    fused, context = torch.randn(2, 5, 16), torch.randn(2, 10, 16)
    mask = torch.ones(2, 10, dtype=torch.bool)
    assert_close(layer(fused, context, mask), fused, atol=0, rtol=0)
    for gate in (m for m in layer.modules() if isinstance(m, Gate)):
        torch.nn.init.normal_(gate.alpha)
    assert not torch.allclose(layer(fused, context, mask), fused)


def test_masked_context_is_ignored():
    layer = HierarchicalFusion(16, 4)
    for gate in (m for m in layer.modules() if isinstance(m, Gate)):
        torch.nn.init.normal_(gate.alpha)
    fused, context = torch.randn(2, 5, 16), torch.randn(2, 10, 16)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, 7:] = False
    changed = context.clone()
    changed[:, 7:] = 50.0
    assert_close(layer(fused, changed, mask), layer(fused, context, mask), atol=0, rtol=0)
