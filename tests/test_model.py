"""The assembled multimodal model: every modality subset, heads, generation, checkpoints, bad input."""

import itertools

import pytest
import torch

from mmr1.config import Config
from mmr1.model import MultimodalModel


@pytest.fixture(scope="module")
def model() -> MultimodalModel:
    torch.manual_seed(0)
    return MultimodalModel(Config.from_name("tiny", n_classes=3)).eval()


def media(B: int, modalities) -> dict:
    out = {}
    if "image" in modalities:
        out.update(pixel_values=torch.randn(B, 3, 32, 32), image_mask=torch.ones(B, dtype=torch.bool))
    if "audio" in modalities:
        out.update(audio_values=torch.randn(B, 8000) * 0.1, audio_lengths=torch.tensor([8000, 5000][:B]))
    if "text" in modalities:
        out.update(text_ids=torch.randint(11, 512, (B, 9)), text_mask=torch.ones(B, 9, dtype=torch.bool))
    return out


SUBSETS = [s for n in range(4) for s in itertools.combinations(("image", "audio", "text"), n)]


@pytest.mark.parametrize("modalities", SUBSETS, ids=lambda s: "+".join(s) or "none")
def test_every_modality_subset_runs_forward_and_backward(model, modalities):
    ids = torch.randint(11, 512, (2, 7))
    model.train()
    out, prefix = model(ids, **media(2, modalities))
    model.eval()
    assert out.logits.shape == (2, 7, 512) and torch.isfinite(out.logits).all()
    assert (prefix is None) == (not modalities)
    out.logits.sum().backward()
    assert model.core.embed_tokens.weight.grad is not None
    if modalities:
        assert model.prefix_proj.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_media_change_the_answer_only_through_the_prefix(model):
    ids = torch.randint(11, 512, (2, 7))
    inputs = media(2, ("image", "audio"))
    with torch.no_grad():
        a, _ = model(ids, **inputs)
        inputs["pixel_values"] = inputs["pixel_values"] + 1
        b, _ = model(ids, **inputs)
    assert not torch.allclose(a.logits, b.logits)


def test_generate_and_stream_agree(model):
    ids = torch.randint(11, 512, (2, 5))
    inputs = media(2, ("image", "audio", "text"))
    full = model.generate(ids, generation=dict(max_new_tokens=6, eos_token_id=None), **inputs)
    streamed = torch.stack(list(model.stream(ids, generation=dict(max_new_tokens=6, eos_token_id=None), **inputs)), 1)
    assert torch.equal(full[:, 5:], streamed)


def test_classification_head(model):
    logits = model.classify(torch.randint(11, 512, (2, 7)), **media(2, ("image",)))
    assert logits.shape == (2, 3)


def test_save_load_round_trip_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = MultimodalModel.from_pretrained(tmp_path)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ids = torch.randint(11, 512, (1, 5))
    inputs = media(1, ("image", "audio", "text"))
    with torch.no_grad():
        assert torch.equal(model(ids, **inputs)[0].logits, loaded(ids, **inputs)[0].logits)


def test_image_positions_survive_a_round_trip_and_tell_patch_places_apart(tmp_path):
    """fusion.image_positions: each patch token's prefix embedding moves by its own place's embedding (through
    the projection to the core; the gates are closed at init), and a saved model rebuilds the weightless
    positions from its config."""
    torch.manual_seed(0)
    config = Config.from_name("tiny", vision={"stem": "conv"}, fusion={"resampler_tokens": 0, "image_positions": True})
    model = MultimodalModel(config).eval()
    model.save_pretrained(tmp_path)
    loaded = MultimodalModel.from_pretrained(tmp_path)
    assert loaded.config.fusion.image_positions and torch.equal(loaded.fusion.image_positions,
                                                                model.fusion.image_positions)
    plain = MultimodalModel(Config.from_name("tiny", vision={"stem": "conv"}, fusion={"resampler_tokens": 0})).eval()
    plain.load_state_dict(model.state_dict())
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        moved = loaded.prefix(pixel_values=pixels).embeds - plain.prefix(pixel_values=pixels).embeds  # [2, 16, d]
    expected = model.fusion.image_positions @ model.prefix_proj.weight.T  # [16, d_model]
    torch.testing.assert_close(moved, expected.expand_as(moved), atol=1e-5, rtol=1e-5)
    assert len({tuple(t.tolist()) for t in expected.round(decimals=4)}) == 16  # sixteen different places


def test_vocab_prefix_is_a_mixture_of_the_cores_own_token_embeddings(tmp_path):
    """fusion.vocab_prefix: each prefix token is softmax(logits over the core's vocabulary) @ its token embedding
    matrix, so a sharp distribution gives exactly a word's embedding; with the core frozen the gradient still
    reaches the projection through the embeddings; and a saved model keeps the option."""
    torch.manual_seed(0)
    config = Config.from_name("tiny", fusion={"vocab_prefix": True})
    model = MultimodalModel(config).eval()
    assert model.prefix_proj.out_features == config.core.vocab_size
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        embeds = model.prefix(pixel_values=pixels).embeds  # [2, P, d_model]
        fused = model.fusion(model.encode(pixel_values=pixels)).tokens  # [2, P, fusion.width]
        probs = model.prefix_proj(fused).softmax(-1)
    torch.testing.assert_close(embeds, probs @ model.core.embed_tokens.weight)
    table = model.core.embed_tokens.weight.detach()
    low, high = table.min(0).values, table.max(0).values  # a mixture stays inside the rows' bounding box
    assert (embeds >= low - 1e-6).all() and (embeds <= high + 1e-6).all()
    with torch.no_grad():  # all mass on token 42 -> exactly its embedding
        model.prefix_proj.weight.zero_()
        model.prefix_proj.bias.fill_(-1e4)
        model.prefix_proj.bias[42] = 1e4
        torch.testing.assert_close(model.prefix(pixel_values=pixels).embeds, table[42].expand_as(embeds))
    torch.manual_seed(1)
    model = MultimodalModel(config)
    model.core.requires_grad_(False)
    out, _ = model(torch.randint(11, 512, (2, 5)), pixel_values=pixels)
    out.logits.sum().backward()
    assert model.prefix_proj.weight.grad.abs().sum() > 0 and model.core.embed_tokens.weight.grad is None
    model.save_pretrained(tmp_path)
    assert MultimodalModel.from_pretrained(tmp_path).config.fusion.vocab_prefix


def test_checkpoint_with_other_sizes_is_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    other = MultimodalModel(Config.from_name("tiny", core={"d_model": 64, "n_heads": 2, "n_kv_heads": 1}))
    from mmr1.checkpoint import load_pretrained_state

    with pytest.raises(ValueError, match="wrong shape"):
        load_pretrained_state(other, tmp_path)


def test_bad_input_is_named():
    torch.manual_seed(0)
    image_only = MultimodalModel(Config.from_name("tiny", audio=None, text=None)).eval()
    ids = torch.randint(11, 512, (2, 5))
    with pytest.raises(ValueError, match="audio_values: this model was built without the audio modality"):
        image_only(ids, audio_values=torch.zeros(2, 100))
    with pytest.raises(ValueError, match=r"unknown input\(s\) \['pixels'\]"):
        image_only(ids, pixels=torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="pixel_values"):
        image_only(ids, pixel_values=torch.zeros(2, 3, 16, 16))


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        Config.from_name("huge")
    with pytest.raises(ValueError, match="core.n_heads"):
        Config.from_name("tiny", core={"n_heads": 4, "n_kv_heads": 3})
