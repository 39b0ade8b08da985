"""LoRA on the core: only adapters train, training changes outputs, merging keeps them."""

import pytest
import torch

from mmr1.config import Config
from mmr1.lora import apply_lora, lora_parameters, merge_lora
from mmr1.model import MultimodalModel


def test_lora_trains_only_adapters_and_merges_exactly():
    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny", vision=None, audio=None, text=None)).eval()
    ids = torch.randint(11, 500, (2, 10))
    with torch.no_grad():
        before = model(ids)[0].logits
    lora = apply_lora(model, r=4, targets=["q_proj", "v_proj"], parts=["core"])
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert trainable and len(trainable) == len(lora_parameters(lora))
    frozen = {n: p.detach().clone() for n, p in lora.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD(lora_parameters(lora), lr=0.1)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(lora(ids)[0].logits[:, :-1].transpose(1, 2), ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in lora.named_parameters() if n in frozen)
    with torch.no_grad():
        unmerged = lora(ids)[0].logits
    assert (unmerged - before).abs().max() > 1e-3
    merged = merge_lora(lora)
    assert type(merged) is MultimodalModel and not lora_parameters(merged)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids)[0].logits, unmerged, atol=1e-6, rtol=0)


def test_lora_target_errors():
    model = MultimodalModel(Config.from_name("tiny", vision=None, audio=None, text=None))
    with pytest.raises(ValueError, match="no Linear layer"):
        apply_lora(model, 4, ["nope_proj"])
    with pytest.raises(ValueError, match="unknown part"):
        apply_lora(model, 4, ["q_proj"], parts=["brain"])
