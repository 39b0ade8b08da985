"""Pad a list of examples into the batch the model consumes, for one objective.

Always (when some record in the batch has it):
  pixel_values [B, 3, H, W] + image_mask [B] · audio_values [B, S] + audio_lengths [B]
  text_ids / text_mask [B, L]: the text encoder's input (question, or caption/text)
  answers: list[str] · ids: list[str]
  skipped: [(where, reason)] of the skip markers the batch dropped (B counts the others only)
sft         input_ids / attention_mask / labels [B, T], right-padded; labels are -100 on
            the prompt and padding (unshifted: labels[t] is the token at t); with a `label`
            (an index, or one of the record's `choices`): class_labels [B] long
rl          input_ids / attention_mask [B, T], LEFT-padded prompts for generation; reasonings:
            list[str], the records' reference reasoning ("" where one has none), when some record has it
preference  chosen_* and rejected_* input_ids / attention_mask / labels, one width T
paired      the media and caption text only (caption, else text, else reasoning) and text_keys [B]
            (rows with one key hold one text); where records carry a medium's own caption
            (`image_caption` / `audio_caption`), that medium's text: {m}_text_ids / {m}_text_mask [B, L]
            and {m}_text_keys [B]; a record's `image_negatives` / `audio_negatives` (captions wrong about
            that medium): {m}_negative_ids / {m}_negative_mask [N, L] and {m}_negative_rows [N] (the batch
            row each belongs to); and {m}_caption_ids / {m}_caption_mask [B, L]: each medium's own caption
            in the core's vocabulary (only its varying words with `caption_templates`; an empty row where a
            record has none); a record's `regions` (boxes with the text naming what is in each):
            region_boxes [R, 4] in the encoder's input pixels, region_rows [R], region_text_index [R] into
            the batch's distinct region texts region_text_ids / region_text_mask [U, L], and region_images
            [B] (the rows whose records carry regions, an empty list included)
masked      text_ids with BERT-style masking and text_labels [B, L] (-100 = not masked)
"""

from __future__ import annotations

import hashlib
from typing import Optional

import torch

from mmr1.config import Config
from mmr1.datamodules.prompt import format_prompt, format_response
from mmr1.datamodules.records import CAPTION_KEYS, OBJECTIVES, medium_text, paired_text
from mmr1.datamodules.regions import region_texts
from mmr1.datamodules.text import Template, varying_words
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.losses.language import IGNORE

MEDIA_KEYS = {"image": "pixel_values", "audio": "audio_values"}  # modality -> example key


class Collator:
    """Callable `collate_fn`: list of examples → batch dict. A skip marker `{"skipped": (where, reason)}`
    (a record the dataset could not use) is dropped from the batch; its report travels in `batch["skipped"]`."""

    def __init__(self, tokenizer: Tokenizer, objective: str, text_tokenizer: Optional[Tokenizer] = None,
                 max_length: Optional[int] = None, text_max_length: Optional[int] = None,
                 mlm_probability: float = 0.15, encode_text: bool = True):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
        self.tokenizer = tokenizer
        self.text_tokenizer = text_tokenizer or tokenizer
        self.objective = objective
        self.max_length = max_length  # longest core sequence; a longer one is an error, never cut
        self.text_max_length = text_max_length  # longest text-encoder input; likewise
        self.mlm_probability = mlm_probability
        self.encode_text = encode_text  # False for a model without a text encoder: no text_ids
        self.caption_templates: Optional[dict[str, Template]] = None  # paired: core captions' varying words only

    @classmethod
    def for_model(cls, config: Config, objective: str, tokenizer: Optional[str] = None,
                  text_tokenizer: Optional[str] = None, max_length: Optional[int] = None) -> "Collator":
        """The collator training uses for a model: its tokenizer folder(s) (None = `Tokenizer.default()`;
        the text encoder's from `config.text.pretrained`) and its length limits (max_length None = the
        longest text the core takes, `core_text_limit`)."""
        core_tokenizer = Tokenizer.from_pretrained(tokenizer) if tokenizer else Tokenizer.default()
        text_folder = text_tokenizer or (config.text.pretrained if config.text is not None else None)
        return cls(core_tokenizer, objective, Tokenizer.from_pretrained(text_folder) if text_folder else None,
                   max_length if max_length is not None else core_text_limit(config),
                   config.text.max_positions if config.text is not None else None,
                   encode_text=config.text is not None)

    def __call__(self, examples: list[dict]) -> dict:
        skipped = [e["skipped"] for e in examples if "skipped" in e]
        examples = [e for e in examples if "skipped" not in e]
        batch = {"skipped": skipped} if skipped else {}
        if not examples:
            return batch
        rows = [self.encode(e) for e in examples]
        batch.update(media(examples))
        if any(row["text"] is not None for row in rows):
            batch["text_ids"], batch["text_mask"] = pad([row["text"] or [] for row in rows],
                                                        self.text_tokenizer.pad_id)  # [B, L]
            if self.objective == "masked":
                batch["text_ids"], batch["text_labels"] = self._mask_tokens(batch["text_ids"], batch["text_mask"])
        if self.objective == "paired":
            batch.update(self._core_captions(examples))
        if self.objective == "paired" and self.encode_text:
            if "text_ids" in batch:
                batch["text_keys"] = text_keys([paired_text(e) for e in examples])  # [B]
            batch.update(self._medium_texts(examples))
            batch.update(self._negatives(examples))
            batch.update(self._regions(examples))
        if self.objective == "sft":
            batch.update(self._padded([row["sequence"] for row in rows]))
            if any(e.get("label") is not None for e in examples):
                batch["class_labels"] = torch.tensor([class_index(e) for e in examples])  # [B]
        elif self.objective == "rl":
            ids = [row["sequence"][0] for row in rows]
            batch["input_ids"], batch["attention_mask"] = pad(ids, self.tokenizer.pad_id, left=True)  # [B, T]
        elif self.objective == "preference":
            both = self._padded([row["chosen"] for row in rows] + [row["rejected"] for row in rows])  # [2B, T]
            for key, value in both.items():
                batch[f"chosen_{key}"], batch[f"rejected_{key}"] = value.chunk(2)
        if any(e.get("answer") is not None for e in examples):
            batch["answers"] = [e.get("answer") or "" for e in examples]
        if self.objective == "rl" and any(e.get("reasoning") for e in examples):
            batch["reasonings"] = [e.get("reasoning") or "" for e in examples]  # what a reasoning reward compares
        if any(e.get("id") is not None for e in examples):
            batch["ids"] = [str(e.get("id") or "") for e in examples]
        return batch

    def encode(self, example: dict) -> dict:
        """One example's token rows: `text` (the text encoder's ids, or None) and the objective's
        `sequence` / `chosen` / `rejected` (ids, labels). ValueError when one is over its limit, so a
        dataset can check a record with this before it reaches a batch."""
        rows = {"text": None}
        text = self._encoder_text(example)
        if self.encode_text and text is not None:
            rows["text"] = self._text_ids(example, text, "text encoder input")
        if self.objective == "sft":
            response = format_response(example["reasoning"], example["answer"], self.tokenizer.eos_token)
            rows["sequence"] = self._sequence(example, response)
        elif self.objective == "rl":
            rows["sequence"] = self._sequence(example, None)
        elif self.objective == "preference":
            for side in ("chosen", "rejected"):
                rows[side] = self._sequence(example, _ended(example[side]))
        return rows

    def _text_ids(self, example: dict, text: Optional[str], what: str) -> list[int]:
        """The text encoder's ids of `text` ([] for none); ValueError naming `what` when over text.max_positions."""
        ids = self.text_tokenizer.encode(text, add_special_tokens=True) if text else []
        _check_length(example, ids, self.text_max_length, what, "text.max_positions")
        return ids

    def _medium_texts(self, examples: list[dict]) -> dict:
        """{m}_text_ids / _mask [B, L] and {m}_text_keys [B] for each medium some example has its own caption for;
        a row without one holds the record's paired text."""
        batch = {}
        for medium in ("image", "audio"):
            if not any(e.get(f"{medium}_caption") for e in examples):
                continue
            texts = [medium_text(e, medium) for e in examples]
            rows = [self._text_ids(e, text, f"the {medium} caption") for e, text in zip(examples, texts)]
            batch[f"{medium}_text_ids"], batch[f"{medium}_text_mask"] = pad(rows, self.text_tokenizer.pad_id)
            batch[f"{medium}_text_keys"] = text_keys(texts)
        return batch

    def _core_captions(self, examples: list[dict]) -> dict:
        """{m}_caption_ids / _mask [B, L]: the core tokenizer's ids of each medium's own caption (less its
        template with `caption_templates`), for each medium some example has a caption for; [] where none."""
        batch = {}
        for key in CAPTION_KEYS:
            if not any(e.get(key) for e in examples):
                continue
            rows = []
            for example in examples:
                text = example.get(key) or ""
                if text and self.caption_templates is not None:
                    text = varying_words(text, self.caption_templates, key)
                rows.append(self.tokenizer.encode(text) if text else [])
            medium = key.removesuffix("_caption")
            batch[f"{medium}_caption_ids"], batch[f"{medium}_caption_mask"] = pad(rows, self.tokenizer.pad_id)
        return batch

    def _negatives(self, examples: list[dict]) -> dict:
        """{m}_negative_ids / _mask [N, L] and _rows [N] for each medium some example has negatives for."""
        batch = {}
        for medium in ("image", "audio"):
            texts, rows = [], []
            for row, example in enumerate(examples):
                for text in example.get(f"{medium}_negatives") or []:
                    texts.append(self._text_ids(example, text, f"a {medium} negative"))
                    rows.append(row)
            if texts:
                ids, mask = pad(texts, self.text_tokenizer.pad_id)  # [N, L]
                batch.update({f"{medium}_negative_ids": ids, f"{medium}_negative_mask": mask,
                              f"{medium}_negative_rows": torch.tensor(rows)})
        return batch

    def _regions(self, examples: list[dict]) -> dict:
        """region_boxes [R, 4] (encoder-input pixels), region_rows [R], region_text_index [R], region_images [B]
        (the rows whose records carry `regions`) and the distinct region texts region_text_ids /
        region_text_mask [U, L], when some example has `regions`."""
        found = region_texts(examples)
        if found is None:
            return {}
        texts, boxes, rows, index, labelled = found
        first = [int(rows[index == u][0]) for u in range(len(texts))]  # the row each text first appears in
        ids = [self._text_ids(examples[row], text, "a region's text") for row, text in zip(first, texts)]
        text_ids, text_mask = pad(ids, self.text_tokenizer.pad_id) if ids else \
            (torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.bool))  # [U, L]
        return {"region_boxes": boxes, "region_rows": rows, "region_text_index": index, "region_images": labelled,
                "region_text_ids": text_ids, "region_text_mask": text_mask}

    def _encoder_text(self, example: dict) -> Optional[str]:
        if self.objective == "paired":  # what describes the media; a QA record's reasoning says what it perceives
            return paired_text(example)
        if self.objective == "masked":
            return example.get("text") or example.get("caption") or example.get("question")
        return example.get("question")

    def _sequence(self, example: dict, response: Optional[str]) -> tuple[list[int], list[int]]:
        """(ids, labels) of prompt + response, labels -100 on the prompt."""
        modalities = [m for m, key in MEDIA_KEYS.items() if example[key] is not None]
        prompt = self.tokenizer.encode(format_prompt(example["question"], modalities, self.tokenizer))
        ids = prompt + (self.tokenizer.encode(response) if response else [])
        labels = [IGNORE] * len(prompt) + ids[len(prompt):]
        _check_length(example, ids, self.max_length, "prompt + response", "max_length")
        return ids, labels

    def _padded(self, rows: list[tuple[list[int], list[int]]]) -> dict:
        input_ids, attention_mask = pad([ids for ids, _ in rows], self.tokenizer.pad_id)  # [B, T]
        labels, _ = pad([labels for _, labels in rows], IGNORE)  # [B, T]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _mask_tokens(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT masking of real, non-special tokens: 80% <mask>, 10% random, 10% kept."""
        special = torch.isin(ids, torch.tensor(sorted(self.text_tokenizer.special_ids)))
        chosen = (torch.rand(ids.shape) < self.mlm_probability) & mask & ~special  # [B, L]
        labels = torch.where(chosen, ids, IGNORE)
        draw = torch.rand(ids.shape)
        ids = torch.where(chosen & (draw < 0.8), self.text_tokenizer.mask_id, ids)
        base_vocab = self.text_tokenizer.backend.get_vocab_size(with_added_tokens=False)
        ids = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), torch.randint(base_vocab, ids.shape), ids)
        return ids, labels


def media(examples: list[dict]) -> dict:
    """pixel_values/image_mask and audio_values/audio_lengths, each only when some example has it."""
    batch = {}
    images = [e["pixel_values"] for e in examples]
    if any(x is not None for x in images):
        blank = torch.zeros_like(next(x for x in images if x is not None))
        batch["pixel_values"] = torch.stack([blank if x is None else x for x in images])  # [B, 3, H, W]
        batch["image_mask"] = torch.tensor([x is not None for x in images])  # [B]
    waves = [e["audio_values"] for e in examples]
    if any(w is not None for w in waves):
        lengths = torch.tensor([0 if w is None else len(w) for w in waves])  # [B]
        values = torch.zeros(len(waves), int(lengths.max()))  # [B, S]
        for row, wave in enumerate(waves):
            if wave is not None:
                values[row, :len(wave)] = wave
        batch["audio_values"], batch["audio_lengths"] = values, lengths
    return batch


def text_keys(texts: list[Optional[str]]) -> torch.Tensor:
    """[B] long keys, equal where the texts are: 63 bits of each text's BLAKE2 digest, the same in every
    process, so keys from different ranks compare."""
    digests = [hashlib.blake2b((t or "").encode(), digest_size=8).digest() for t in texts]
    return torch.tensor([int.from_bytes(d, "big") >> 1 for d in digests], dtype=torch.long)


def pad(rows: list[list[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] long ids and [B, T] bool mask (True = real token), padded right or left."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = True
    return ids, mask


def prompts_of(input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
               pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts of an sft batch (right-padded input_ids / labels / attention_mask [B, T]: the tokens before
    the first label), LEFT-padded for generation as rl batches are: ids [B, P] long, mask [B, P] bool."""
    prompt = attention_mask.bool() & (labels == IGNORE)  # [B, T]
    lengths = prompt.long().cumprod(dim=1).sum(dim=1)  # [B]: the prompt runs until the first label
    return pad([row[:n].tolist() for row, n in zip(input_ids, lengths.tolist())], pad_id, left=True)


def class_index(example: dict) -> int:
    """The class of a record: its `label` as an index, or the position of the `label` string in its `choices`."""
    label, choices = example.get("label"), example.get("choices") or []
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < (len(choices) or label + 1):
        return label
    if isinstance(label, str) and label in choices:
        return choices.index(label)
    raise ValueError(f"record {example.get('id', '?')}: label {label!r} is neither a class index (an int from 0, "
                     f"below len(choices)) nor one of its choices {choices}; in a batch with labels, every "
                     "record needs one")


def core_text_limit(config: Config) -> int:
    """The longest text the core takes: core.max_seq_len less the largest prefix, when the fusion bounds it
    (`fusion.resampler_tokens` per modality); else core.max_seq_len (the core checks prefix + text itself)."""
    prefix = config.fusion.resampler_tokens * len(config.modalities) if config.modalities else 0
    return config.core.max_seq_len - prefix


def _check_length(example: dict, ids: list[int], limit: Optional[int], what: str, setting: str) -> None:
    if limit is not None and len(ids) > limit:
        raise ValueError(f"record {example.get('id', '?')}: {what} is {len(ids)} tokens, longer than "
                         f"{setting}={limit}; shorten the record or raise the limit (nothing is cut silently)")


def _ended(response: str) -> str:
    """A chosen/rejected response, closed with </s> if it is not already."""
    return response if response.rstrip().endswith("</s>") else response + "</s>"
