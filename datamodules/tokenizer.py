"""The text tokenizer: a Hugging Face `tokenizers` object with mmr1's special tokens.

mmr1 trains byte-level BPE vocabularies itself (in memory, in milliseconds) or loads
any folder with a `tokenizer.json` (or one AutoTokenizer can read). The SPECIAL_TOKENS
are always present; a trained BPE holds them at ids 0..10, so `<pad>`=0, `<s>`=1,
`</s>`=2 match CoreConfig's defaults. `<s>`/`</s>` delimit the core's chat format
unless the folder names its own bos/eos and has a chat template (a pretrained chat
model, see `mmr1 import`): then prompts are its template's user turn and a response
ends with its eos. Padding and masking use the folder's own pad/mask tokens when it
names them (e.g. BERT's `[PAD]`), so a pretrained text encoder never sees an id
outside its embedding table.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterable

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers

from mmr1.config import SPECIAL_TOKENS


class Tokenizer:
    """Encode/decode text; special tokens are single ids."""

    def __init__(self, backend: tokenizers.Tokenizer, pad_token: str = "<pad>", mask_token: str = "<mask>",
                 bos_token: str = "<s>", eos_token: str = "</s>", chat_template: str | None = None):
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        backend.no_padding()  # the collator pads and truncates
        backend.no_truncation()
        self.backend = backend
        self.pad_token = pad_token
        self.mask_token = mask_token
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.chat_template = chat_template  # Jinja, as in Hugging Face tokenizer_config.json

    # ---- construction -------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512) -> "Tokenizer":
        """A byte-level BPE trained in memory; special tokens take ids 0..10."""
        if vocab_size < len(SPECIAL_TOKENS) + 256:
            raise ValueError(f"vocab_size: byte-level BPE needs at least {len(SPECIAL_TOKENS) + 256}, got {vocab_size}")
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        backend.train_from_iterator(texts, trainer)
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)],
        )
        return cls(backend)

    @classmethod
    def default(cls) -> "Tokenizer":
        """The vocabulary of the `tiny` preset: 512 BPE tokens trained on the synthetic corpus."""
        return _default_tokenizer()

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Tokenizer":
        """Load a folder written by `save`, or any Hugging Face tokenizer folder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such tokenizer folder")
        path = folder / "tokenizer.json"
        if path.is_file():
            try:
                backend = tokenizers.Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception on a damaged file
                raise ValueError(f"{path}: damaged tokenizer file ({e})") from e
        else:
            from transformers import AutoTokenizer

            try:
                backend = AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer
            except (OSError, ValueError, TypeError) as e:
                raise FileNotFoundError(f"{folder}: no tokenizer.json, and no other tokenizer files that "
                                        "transformers reads (vocab.txt, vocab.json + merges.txt, ...)") from e
        names = _special_token_names(folder)
        template = _chat_template(folder)
        return cls(backend, names.get("pad_token", "<pad>"), names.get("mask_token", "<mask>"),
                   names.get("bos_token", "<s>") if template else "<s>",
                   names.get("eos_token", "</s>") if template else "</s>", template)

    def to_dict(self) -> dict:
        """The whole tokenizer as plain data (an objective's `.ckpt` stores it): `from_dict` gives it back."""
        return {"json": self.backend.to_str(), "pad_token": self.pad_token, "mask_token": self.mask_token,
                "bos_token": self.bos_token, "eos_token": self.eos_token, "chat_template": self.chat_template}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        """`to_dict`'s data back as a Tokenizer (data from before bos/eos/chat_template were kept: mmr1's own)."""
        return cls(tokenizers.Tokenizer.from_str(data["json"]), data["pad_token"], data["mask_token"],
                   data.get("bos_token", "<s>"), data.get("eos_token", "</s>"), data.get("chat_template"))

    def save(self, folder: str | Path) -> Path:
        """Write tokenizer.json + tokenizer_config.json (AutoTokenizer-loadable)."""
        from transformers import PreTrainedTokenizerFast

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=self.backend, bos_token=self.bos_token, eos_token=self.eos_token, unk_token="<unk>",
            pad_token=self.pad_token, mask_token=self.mask_token, chat_template=self.chat_template,
        )
        hf.save_pretrained(str(folder))
        return folder

    # ---- use ----------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def chat_prompt(self, content: str) -> str:
        """`content` as the user turn of the chat template, with the assistant's turn opened."""
        from transformers.utils.chat_template_utils import render_jinja_template

        if self.chat_template is None:
            raise ValueError("chat_template: this tokenizer has none")
        rendered, _ = render_jinja_template([[{"role": "user", "content": content}]], chat_template=self.chat_template,
                                            add_generation_prompt=True, bos_token=self.bos_token,
                                            eos_token=self.eos_token)
        return rendered[0]

    def token_id(self, token: str) -> int:
        index = self.backend.token_to_id(token)
        if index is None:
            raise KeyError(f"{token!r} is not in the vocabulary")
        return index

    @property
    def special_ids(self) -> set[int]:
        """Ids of every special token (mmr1's and the vocabulary's own, e.g. [CLS])."""
        return {i for i, token in self.backend.get_added_tokens_decoder().items() if token.special}

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def pad_id(self) -> int:
        return self.token_id(self.pad_token)

    @property
    def mask_id(self) -> int:
        return self.token_id(self.mask_token)

    @property
    def bos_id(self) -> int:
        return self.token_id(self.bos_token)

    @property
    def eos_id(self) -> int:
        return self.token_id(self.eos_token)


def _special_token_names(folder: Path) -> dict[str, str]:
    """pad/mask/bos/eos token names from tokenizer_config.json or special_tokens_map.json."""
    names: dict[str, str] = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / file
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: damaged, not valid JSON ({e})") from e
            for key in ("pad_token", "mask_token", "bos_token", "eos_token"):
                value = data.get(key)
                if isinstance(value, dict):
                    value = value.get("content")
                if isinstance(value, str):
                    names[key] = value
    return names


def _chat_template(folder: Path) -> str | None:
    """The Jinja chat template of chat_template.jinja or tokenizer_config.json, if any."""
    path = folder / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    config = folder / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) else None


@functools.lru_cache(maxsize=1)
def _default_tokenizer() -> Tokenizer:
    from mmr1.datamodules.synth import text_corpus

    return Tokenizer.train(text_corpus(), vocab_size=512)
