"""The core loads Hugging Face Llama/Qwen2 checkpoints and matches transformers exactly."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from mmr1.core import ReasoningCore

SIZES = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_llama(tie: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(**SIZES, rms_norm_eps=1e-5, tie_word_embeddings=tie,
                      rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
    return LlamaForCausalLM(cfg).eval()


def tiny_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(**SIZES, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "default", "rope_theta": 20000.0})
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # transformers initialises biases to zero; make them count
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(std=0.5)
    return model


@pytest.mark.parametrize("make", [lambda: tiny_llama(True), lambda: tiny_llama(False), tiny_qwen2],
                         ids=["llama-tied", "llama-untied", "qwen2"])
def test_logits_and_greedy_tokens_match_transformers(make, tmp_path):
    hf = make()
    hf.save_pretrained(tmp_path)
    core = ReasoningCore.from_hf(tmp_path).eval()
    assert core.config.tie_embeddings == hf.config.tie_word_embeddings
    assert (core.lm_head.weight is core.embed_tokens.weight) == hf.config.tie_word_embeddings
    ids = torch.randint(3, 96, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(core(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)
    expected = hf.generate(ids, max_new_tokens=12, do_sample=False)
    torch.testing.assert_close(core.generate(ids, max_new_tokens=12), expected, atol=0, rtol=0)


def test_unsupported_checkpoint_is_refused(tmp_path):
    tiny_llama(True).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        ReasoningCore.from_hf(tmp_path)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ReasoningCore.from_hf(tmp_path / "nowhere")


def test_from_hf_reads_what_save_pretrained_writes(tmp_path):
    from mmr1.config import Config
    from mmr1.model import MultimodalModel

    torch.manual_seed(0)
    core = ReasoningCore(Config.from_name("tiny").core).eval()
    folder = core.save_pretrained(tmp_path / "core")
    loaded = ReasoningCore.from_hf(folder).eval()
    ids = torch.randint(0, core.config.vocab_size, (1, 6))
    torch.testing.assert_close(loaded(ids).logits, core(ids).logits, rtol=0, atol=0)
    config = Config.from_checkpoint(folder)  # a text-only model around that core
    assert config.vision is None and config.core == core.config
    assert MultimodalModel(config).core.config == core.config
