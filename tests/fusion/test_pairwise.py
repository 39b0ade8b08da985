import torch
from torch.testing import assert_close

from mmr1.fusion.gate import Gate
from mmr1.fusion.pairwise import PairwiseFusion


def streams(B=2, lengths={"image": 4, "audio": 5, "text": 3}, dim=16):
    tokens = {m: torch.randn(B, n, dim) for m, n in lengths.items()}
    masks = {m: torch.ones(B, n, dtype=torch.bool) for m, n in lengths.items()}
    return tokens, masks


def test_one_block_per_ordered_pair():
    fusion = PairwiseFusion(("image", "audio", "text"), 16, 4)
    assert sorted(fusion.blocks) == sorted(
        ["image<-audio", "image<-text", "audio<-image", "audio<-text", "text<-image", "text<-audio"]
    )


def test_identity_at_init_and_shapes_kept():
    fusion = PairwiseFusion(("image", "audio", "text"), 16, 4)
    tokens, masks = streams()
    fused = fusion(tokens, masks)
    assert list(fused) == ["image", "audio", "text"]
    for m in tokens:
        assert_close(fused[m], tokens[m], atol=0, rtol=0)


def test_absent_modality_is_as_if_not_passed():
    fusion = PairwiseFusion(("image", "audio", "text"), 16, 4)
    for gate in (m for m in fusion.modules() if isinstance(m, Gate)):
        torch.nn.init.normal_(gate.alpha)
    tokens, masks = streams()
    masks["audio"][1] = False
    fused = fusion(tokens, masks)
    without = fusion({m: tokens[m] for m in ("image", "text")}, {m: masks[m] for m in ("image", "text")})
    for m in ("image", "text"):
        assert_close(fused[m][1], without[m][1], atol=1e-6, rtol=0)
        assert not torch.allclose(fused[m][0], without[m][0])
