"""Plain-text corpora for language-model pretraining: streamed, packed into fixed blocks, resumable.

Documents come from `.txt` files (one per file, or per blank-line-separated block) and JSONL
files (a `text` field, or `question`/`answer` (+ `reasoning`) rendered in the chat format).
Each document is tokenized and followed by `</s>`; the token stream is cut into blocks of
`block_size`. Document ids restart at 0 in every block, so a document cut by a block boundary
continues as a new document in the next one; only the last block of a shard is padded.

With `unscored_captions`, the words of a JSONL record's reasoning that only its media can tell are
read but not scored (label -100): the words of its `image_caption` / `audio_caption` that differ from
record to record (the "7" of "The picture shows 7."; the words every caption of that key shares are
the template, and stay scored). A text-only stage cannot know them, and a core taught to guess them
from the text learns to answer without looking at the media it is given later.

Shard `s` of `n = world_size * workers` holds the documents whose index `i % n == s`. The
loader remembers, per shard, how far the *consumed* batches reached (documents done + tokens
into the next one); Lightning 2.6 saves `loader.state_dict()` in the checkpoint of any train
DataLoader with `state_dict`/`load_state_dict` and restores it before the first batch.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Iterator, Literal, NamedTuple, Optional, Sequence

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmr1.datamodules.prompt import format_prompt, format_response
from mmr1.datamodules.records import CAPTION_KEYS
from mmr1.config import Config
from mmr1.datamodules.tokenizer import Tokenizer

DocSplit = Literal["file", "blank_line"]
Position = tuple[int, int]  # (documents of the shard done, tokens of the next one already emitted)
Span = tuple[int, int]  # [start, end) characters of a document
Template = tuple[str, str]  # (prefix, suffix) every caption of one key shares


class Document(NamedTuple):
    """One document's text and the character spans whose tokens get no loss."""
    text: str
    unscored: tuple[Span, ...] = ()


# ---- documents -----------------------------------------------------------------------------
def read_documents(files: Sequence[str | Path], doc_split: DocSplit = "file") -> Iterator[str]:
    """Every document of `files`, in order, reading JSONL and blank-line text line by line."""
    return (document.text for document in read_scored_documents(files, doc_split))


def read_scored_documents(files: Sequence[str | Path], doc_split: DocSplit = "file",
                          templates: Optional[dict[str, Template]] = None) -> Iterator[Document]:
    """`read_documents` with each document's unscored spans: with `templates` (of `caption_templates`),
    the varying words of JSONL records' media captions."""
    for path in map(Path, files):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: corpus file not found")
        if path.suffix == ".jsonl":
            yield from _jsonl_documents(path, templates)
        elif doc_split == "file":
            yield Document(path.read_text(encoding="utf-8"))
        elif doc_split == "blank_line":
            yield from map(Document, _blank_line_documents(path))
        else:
            raise ValueError(f"doc_split: expected 'file' or 'blank_line', got {doc_split!r}")


def _blank_line_documents(path: Path) -> Iterator[str]:
    lines: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines).rstrip("\n")
                lines = []
    if lines:
        yield "".join(lines).rstrip("\n")


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict]]:
    """("path:line", record) for each non-blank line of a JSONL file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus file not found")
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: {e}") from e
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: record: expected a JSON object, got {type(record).__name__}")
            yield f"{path}:{line_no}", record


def _jsonl_documents(path: Path, templates: Optional[dict[str, Template]]) -> Iterator[Document]:
    for where, record in _jsonl_records(path):
        try:
            document = Document(render_record(record)) if templates is None else render_record_captions(record,
                                                                                                        templates)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        yield document


def render_record(record: dict) -> str:
    """A JSONL record as one document: its `text`, or prompt + response in the chat format."""
    if isinstance(record.get("text"), str):
        return record["text"]
    if isinstance(record.get("question"), str) and isinstance(record.get("answer"), str):
        return format_prompt(record["question"]) + format_response(record.get("reasoning"), record["answer"])
    raise ValueError("record: expected a 'text' field or 'question' and 'answer' strings")


def caption_templates(files: Sequence[str | Path]) -> dict[str, Template]:
    """Per caption key, the prefix and suffix that all captions of that key in the JSONL `files` share,
    each cut back to a word boundary ("The picture shows " and "." for "The picture shows 7.")."""
    captions: dict[str, set[str]] = {}
    for path in map(Path, files):
        if path.suffix != ".jsonl":
            continue
        for where, record in _jsonl_records(path):
            for key in CAPTION_KEYS:
                try:
                    caption = _caption(record, key)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from e
                if caption is not None:
                    captions.setdefault(key, set()).add(caption)
    templates = {}
    for key, texts in captions.items():
        prefix = os.path.commonprefix(list(texts))
        suffix = os.path.commonprefix([t[::-1] for t in texts])[::-1]
        while prefix and prefix[-1].isalnum():
            prefix = prefix[:-1]
        while suffix and suffix[0].isalnum():
            suffix = suffix[1:]
        templates[key] = (prefix, suffix)
    return templates


def template_of(templates: dict[str, Template], key: str) -> Template:
    """The template of caption key `key` in `templates` (of `caption_templates`); ValueError when it has none."""
    if key not in templates:
        raise ValueError(f"{key}: no template for it (caption_templates read other files)")
    return templates[key]


def varying_words(caption: str, templates: dict[str, Template], key: str) -> str:
    """A caption less its key's template (`caption_templates`): "7" of "The picture shows 7."; "" when the
    template covers it all. ValueError when the caption does not start and end as the template does."""
    prefix, suffix = template_of(templates, key)
    if not (caption.startswith(prefix) and caption.endswith(suffix)):
        raise ValueError(f"{key}: {caption!r} does not fit its template {prefix!r} ... {suffix!r} (the prefix and "
                         "suffix every training caption of that key shares)")
    return caption[len(prefix):max(len(prefix), len(caption) - len(suffix))]


def _caption(record: dict, key: str) -> Optional[str]:
    """The record's caption `key`, None when absent; ValueError when it is not a non-empty string."""
    caption = record.get(key)
    if caption is not None and (not isinstance(caption, str) or not caption.strip()):
        raise ValueError(f"{key}: expected a non-empty string, got {caption!r}")
    return caption


def render_record_captions(record: dict, templates: dict[str, Template]) -> Document:
    """`render_record` with the varying words of the record's media captions unscored.

    Each caption present (`image_caption`, `audio_caption`) must occur in the rendered response (the
    reasoning or answer); its span less its key's template prefix and suffix is unscored. A record
    without captions, or a key whose captions are all the same, is scored in full.
    """
    text = render_record(record)
    response_start = 0 if isinstance(record.get("text"), str) else len(format_prompt(record["question"]))
    spans = []
    for key in CAPTION_KEYS:
        caption = _caption(record, key)
        if caption is None:
            continue
        prefix, suffix = template_of(templates, key)
        start = text.find(caption, response_start)
        if start < 0:
            raise ValueError(f"{key}: {caption!r} is not in the record's reasoning or answer, "
                             "so it cannot be left unscored")
        first, last = start + len(prefix), start + len(caption) - len(suffix)
        if first < last:
            spans.append((first, last))
    return Document(text, tuple(spans))


def encode_document(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of one document ending in `</s>` (added unless the text already ends with it)."""
    return encode_scored_document(tokenizer, Document(text))[0]


def encode_scored_document(tokenizer: Tokenizer, document: Document) -> tuple[list[int], list[bool]]:
    """`encode_document`'s ids and, per token, whether it is scored (False where its characters overlap
    an unscored span; a byte-level token's leading space counts as its own)."""
    encoding = tokenizer.backend.encode(document.text, add_special_tokens=False)
    ids = list(encoding.ids)
    scored = [True] * len(ids) if not document.unscored else [
        not any(token_start < end and token_end > start for start, end in document.unscored)
        for token_start, token_end in encoding.offsets]
    if not (ids and ids[-1] == tokenizer.eos_id):
        ids, scored = ids + [tokenizer.eos_id], scored + [True]
    return ids, scored


# ---- packing ---------------------------------------------------------------------------------
class PackedTextDataset(IterableDataset):
    """Packed blocks of a text corpus, streamed and sharded over DDP ranks × dataloader workers."""

    def __init__(self, files: Sequence[str | Path], tokenizer: Tokenizer, block_size: int,
                 doc_split: DocSplit = "file", seed: Optional[int] = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None, unscored_captions: bool = False):
        """`seed` shuffles the file order per epoch (None keeps it); rank/world_size default to torch.distributed;
        `unscored_captions` leaves the varying words of JSONL records' media captions out of the loss."""
        if block_size < 1:
            raise ValueError(f"block_size: expected >= 1, got {block_size}")
        self.files = [Path(f) for f in files]
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.doc_split = doc_split
        self.seed = seed
        self.unscored_captions = unscored_captions
        self.templates = caption_templates(self.files) if unscored_captions else None
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        # set by PackedLoader before each epoch; pickled into the workers with the dataset
        self.epoch = 0
        self.positions: dict[int, Position] = {}  # shard -> where to resume
        self.rotation = 0  # batches already consumed this epoch: which worker goes first

    def file_order(self, epoch: int) -> list[Path]:
        """The files in the order read during `epoch`."""
        if self.seed is None:
            return list(self.files)
        order = list(self.files)
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        shard = self.rank * workers + (worker_id + self.rotation) % workers
        return self.blocks(shard, self.world_size * workers, self.epoch, self.positions.get(shard, (0, 0)))

    def blocks(self, shard: int, num_shards: int, epoch: int = 0, start: Position = (0, 0)) -> Iterator[dict]:
        """The blocks of one shard from `start`; each carries `stream_state` = (epoch, shard, *position after it)."""
        T, pad_id = self.block_size, self.tokenizer.pad_id
        tokens: list[int] = []
        scored: list[bool] = []
        document_ids: list[int] = []
        done = start[0]
        for n, document in enumerate(self._shard_documents(shard, num_shards, epoch)):
            if n < start[0]:
                continue
            ids, ids_scored = encode_scored_document(self.tokenizer, document)
            pos = start[1] if n == start[0] else 0
            while pos < len(ids):
                take = min(T - len(tokens), len(ids) - pos)
                piece = document_ids[-1] + 1 if document_ids else 0
                tokens += ids[pos:pos + take]
                scored += ids_scored[pos:pos + take]
                document_ids += [piece] * take
                pos += take
                if len(tokens) == T:
                    position = (n + 1, 0) if pos == len(ids) else (n, pos)
                    yield _block(tokens, scored, document_ids, 0, pad_id, (epoch, shard, *position))
                    tokens, scored, document_ids = [], [], []
            done = n + 1
        if tokens:
            yield _block(tokens, scored, document_ids, T - len(tokens), pad_id, (epoch, shard, done, 0))

    def _shard_documents(self, shard: int, num_shards: int, epoch: int) -> Iterator[Document]:
        documents = read_scored_documents(self.file_order(epoch), self.doc_split, self.templates)
        for index, document in enumerate(documents):
            if index % num_shards == shard:
                yield document


def _block(tokens: list[int], scored: list[bool], document_ids: list[int], n_pad: int, pad_id: int,
           state: tuple) -> dict:
    """One block: unscored tokens get label -100; padding (at the end) gets pad_id, label -100 and a
    document id of its own."""
    input_ids = torch.tensor(tokens + [pad_id] * n_pad)  # [T]
    labels = input_ids.clone()
    labels[len(tokens):] = -100
    labels[:len(tokens)][~torch.tensor(scored)] = -100
    ids = torch.tensor(document_ids + [document_ids[-1] + 1] * n_pad)  # [T]
    mask = torch.arange(len(input_ids)) < len(tokens)  # [T] bool
    return {"input_ids": input_ids, "labels": labels, "document_ids": ids, "attention_mask": mask,
            "stream_state": state}


def collate_blocks(blocks: list[dict]) -> dict:
    """Stack blocks into [B, T] tensors; `stream_state` is the last block's (a batch comes from one shard)."""
    batch = {key: torch.stack([b[key] for b in blocks]) for key in ("input_ids", "labels", "document_ids",
                                                                      "attention_mask")}
    batch["padding_fraction"] = 1.0 - batch["attention_mask"].float().mean().item()
    batch["stream_state"] = blocks[-1]["stream_state"]
    return batch


# ---- loading and resuming ----------------------------------------------------------------------
class PackedLoader(DataLoader):
    """A DataLoader over a PackedTextDataset whose state (per-shard progress of consumed batches) resumes mid-epoch.

    Call `consumed(batch["stream_state"])` once a batch is used (TextDataModule does it in
    `on_before_batch_transfer`, after Lightning's prefetch). Workers are started afresh each
    epoch, so they see the current epoch and resume positions.
    """

    def __init__(self, dataset: PackedTextDataset, batch_size: int = 1, num_workers: int = 0):
        super().__init__(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_blocks)
        self.epoch = 0
        self.batches = 0  # consumed this epoch
        self.positions: dict[int, Position] = {}

    @property
    def num_shards(self) -> int:
        return self.dataset.world_size * max(self.num_workers, 1)

    def __iter__(self) -> Iterator[dict]:
        self.dataset.epoch, self.dataset.positions = self.epoch, dict(self.positions)
        self.dataset.rotation = self.batches % max(self.num_workers, 1)
        yield from super().__iter__()
        self.epoch, self.batches, self.positions = self.epoch + 1, 0, {}

    def consumed(self, stream_state: tuple) -> None:
        """Record that the batch with this `stream_state` was used."""
        epoch, shard, done, offset = stream_state
        if epoch == self.epoch:
            self.positions[shard] = (done, offset)
            self.batches += 1

    def state_dict(self) -> dict:
        """Progress of every shard (gathered from all ranks), the epoch and the batch count."""
        positions = dict(self.positions)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Optional[dict]] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.positions)
            positions = {shard: p for rank_positions in gathered for shard, p in rank_positions.items()}
        return {"epoch": self.epoch, "batches": self.batches, "num_shards": self.num_shards,
                "positions": {shard: list(p) for shard, p in positions.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["num_shards"] != self.num_shards:
            raise ValueError(f"resuming a text stream needs the same ranks × workers ({state['num_shards']} shards), "
                             f"got {self.num_shards}")
        self.epoch, self.batches = state["epoch"], state["batches"]
        self.positions = {int(shard): tuple(p) for shard, p in state["positions"].items()}


# ---- datamodule ------------------------------------------------------------------------------
class TextDataModule(L.LightningDataModule):
    """Packed plain-text pretraining data: batches of input_ids/labels/document_ids/attention_mask [B, T]."""

    def __init__(
        self,
        train_files: list[str],
        val_files: Optional[list[str]] = None,
        tokenizer: Optional[str] = None,
        vocab_size: int = 512,
        block_size: int = 512,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: Optional[int] = 0,
        doc_split: DocSplit = "file",
        unscored_captions: bool = False,
        config: Optional[Config] = None,
    ):
        """
        Args:
            train_files / val_files: `.txt` and `.jsonl` corpora.
            tokenizer: a tokenizer folder; None = train a byte-level BPE of `vocab_size` on the train files.
            block_size: tokens per packed block (the core's sequence length).
            batch_size / num_workers: per process (per GPU under DDP); resuming needs the same ranks × workers.
            seed: shuffles the training file order per epoch; None keeps it.
            doc_split: a `.txt` file is one document ("file") or one per blank-line-separated block.
            unscored_captions: the words of JSONL records' `image_caption` / `audio_caption` that differ between
                records (what only the media show) are read but left out of the loss where the caption occurs
                in the reasoning; each caption must occur there.
            config: the model's Config (linked by the CLI): blocks and vocabulary must fit its core.
        """
        super().__init__()
        if config is not None:
            if block_size > config.core.max_seq_len:
                raise ValueError(f"block_size: {block_size} is longer than core.max_seq_len={config.core.max_seq_len}")
            if vocab_size > config.core.vocab_size:
                raise ValueError(f"vocab_size: {vocab_size} is more than core.vocab_size={config.core.vocab_size}")
        self.save_hyperparameters(ignore=["config"])
        self.config = config
        self.tokenizer: Optional[Tokenizer] = None
        self.datasets: dict[str, PackedTextDataset] = {}
        self.loaders: dict[str, PackedLoader] = {}

    def setup(self, stage: Optional[str] = None) -> None:
        hp = self.hparams
        if self.tokenizer is None:
            self.tokenizer = (Tokenizer.from_pretrained(hp.tokenizer) if hp.tokenizer else
                              Tokenizer.train(read_documents(hp.train_files, hp.doc_split), hp.vocab_size))
        files = {"train": hp.train_files, "val": hp.val_files}
        for split in ("train", "val") if stage in (None, "fit") else ("val",):
            if files[split] and split not in self.datasets:
                self.datasets[split] = PackedTextDataset(files[split], self.tokenizer, hp.block_size, hp.doc_split,
                                                         seed=hp.seed if split == "train" else None,
                                                         unscored_captions=hp.unscored_captions)

    def _loader(self, split: str) -> PackedLoader | list:
        if split not in self.datasets:
            return []
        if split not in self.loaders:
            self.loaders[split] = PackedLoader(self.datasets[split], self.hparams.batch_size, self.hparams.num_workers)
        return self.loaders[split]

    def train_dataloader(self) -> PackedLoader | list:
        return self._loader("train")

    def val_dataloader(self) -> PackedLoader | list:
        return self._loader("val")

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Takes `stream_state` out of the batch; a training batch advances the train loader's resume state."""
        state = batch.pop("stream_state", None)
        if state is not None and "train" in self.loaders and (self.trainer is None or self.trainer.training):
            self.loaders["train"].consumed(state)
        return batch
