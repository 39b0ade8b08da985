"""int8 quantization and pruning: smaller or sparser, and the model still loads and answers."""

import copy

import pytest
import torch

from mmr1.checkpoint import export
from mmr1.compress import prune_channels, prune_magnitude, quantize_int8, size_mb, sparsity
from mmr1.config import Config
from mmr1.inference import QAPipeline, load
from mmr1.model import MultimodalModel


@pytest.fixture(scope="module")
def qa(tiny_checkpoint) -> QAPipeline:
    return load(tiny_checkpoint)


def test_int8_is_smaller_and_close_to_fp32(qa):
    torch.manual_seed(0)
    fp32 = MultimodalModel(Config.from_name("tiny")).eval()  # the preset's own init (std 0.02)
    model, report = quantize_int8(fp32)
    assert report.size_mb < 0.5 * size_mb(fp32)
    ids = torch.randint(11, 500, (2, 12))
    with torch.inference_mode():
        ref, out = fp32(ids)[0].logits, model(ids)[0].logits
    assert (out - ref).norm() < 0.1 * ref.norm()  # measured: 3.7% relative error
    assert QAPipeline(model, qa.tokenizer)("How many?", max_new_tokens=4).completion_tokens <= 4


def test_magnitude_pruning_reaches_the_target_and_is_permanent(qa):
    model, report = prune_magnitude(copy.deepcopy(qa.model), 0.6)
    assert report.sparsity == pytest.approx(0.6, abs=1e-3) and report.sparsity == sparsity(model)
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name in model.state_dict())
    assert model.core.lm_head.weight is model.core.embed_tokens.weight  # the tie survives, unpruned
    assert QAPipeline(model, qa.tokenizer)("How many?", max_new_tokens=4).completion_tokens <= 4


def test_channel_pruning_zeroes_whole_swiglu_channels(qa):
    model, report = prune_channels(copy.deepcopy(qa.model), 0.25)
    mlp = model.core.layers[0].mlp
    dead = (mlp.up_proj.weight == 0).all(dim=1)  # [hidden]
    assert int(dead.sum()) == round(0.25 * mlp.up_proj.out_features)
    assert (mlp.gate_proj.weight[dead] == 0).all() and (mlp.down_proj.weight[:, dead] == 0).all()
    assert report.sparsity > 0.1
    assert QAPipeline(model, qa.tokenizer)("How many?", max_new_tokens=4).completion_tokens <= 4


def test_export_without_quantize_is_plain_fp32(tiny_checkpoint, tmp_path):
    folder, report = export(tiny_checkpoint, tmp_path / "pruned", quantize=None, prune=0.3)
    assert not (folder / "compression.json").exists() and report.sparsity == pytest.approx(0.3, abs=1e-3)
    assert sparsity(load(folder).model) == pytest.approx(0.3, abs=1e-3)
    with pytest.raises(ValueError, match="quantize"):
        export(tiny_checkpoint, tmp_path / "x", quantize="int4")


def test_int8_export_is_int8_on_disk_and_loads_back(tiny_checkpoint, tmp_path):
    """At most 45 % of the fp32 file; the weights read back within one int8 step of the originals."""
    from safetensors.torch import load_file

    from mmr1.model import MultimodalModel

    folder, _ = export(tiny_checkpoint, tmp_path / "int8", quantize="int8")
    fp32_bytes = (tiny_checkpoint / "model.safetensors").stat().st_size
    assert (folder / "model.safetensors").stat().st_size <= 0.45 * fp32_bytes
    stored = load_file(str(folder / "model.safetensors"))
    assert stored["core.layers.0.self_attn.q_proj.weight"].dtype == torch.int8
    original, restored = MultimodalModel.from_pretrained(tiny_checkpoint), MultimodalModel.from_pretrained(folder)
    for (name, a), b in zip(original.state_dict().items(), restored.state_dict().values()):
        step = a.abs().reshape(a.shape[0], -1).amax(dim=1).max() / 127 if a.dim() >= 2 else 0
        assert (a - b).abs().max() <= step / 2 + 1e-6, name
    assert load(folder).model is not None
