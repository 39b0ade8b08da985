"""Asking a model questions about images and sounds.

    qa = mmr1.load("runs/tiny")                       # a checkpoint folder, or a Lightning .ckpt
    result = qa("How many beeps do you hear?", audio="clip.wav")
    print(result.reasoning, result.answer)
    results = qa(["Q1", "Q2"], image=["a.png", None])  # one batch, left-padded inside
    for piece in qa.stream("Q1", image="a.png"): print(piece, end="")

The prompt is built by the same record processors, collator and prompt format that
training uses. Batched, streamed and one-by-one answers are the same tokens (greedy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from mmr1.model import MultimodalModel

ImageInput = Any  # a path, a PIL image or a [3, H, W] / [1, H, W] / [H, W] tensor
AudioInput = Any  # a path, or an array/tensor [N], [N, C] or [C, N] (C <= 8); integer PCM is scaled by its dtype
GENERATION = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "eos_token_id", "generator")


@dataclass
class QAResult:
    answer: Optional[str]  # the text inside <answer>…</answer>, None when the model wrote none
    reasoning: Optional[str]  # the text inside <think>…</think>
    text: str  # everything generated up to the end token or a stop string, special tokens included
    prompt_tokens: int
    completion_tokens: int


class QAPipeline:
    def __init__(self, model: MultimodalModel, tokenizer, max_question_tokens: int = 256):
        from mmr1.datamodules.collate import Collator
        from mmr1.datamodules.records import RecordProcessor

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.records = RecordProcessor.from_config(model.config)
        text = model.config.text
        self.collate = Collator(tokenizer, "rl", text_max_length=text.max_positions if text is not None else None,
                                encode_text=text is not None)
        self.max_question_tokens = max_question_tokens

    @classmethod
    def from_pretrained(cls, checkpoint: Union[str, Path], config: Union[str, Path, None] = None) -> "QAPipeline":
        from mmr1.checkpoint import load_model

        return cls(*load_model(checkpoint, config))

    def __call__(self, question, image=None, audio=None, sample_rate: Optional[int] = None,
                 stop: Sequence[str] = (), **generation):
        """One question (str) → QAResult; a list of questions (with lists of media) → list of QAResult.
        `generation`: max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, generator."""
        if isinstance(question, str):
            return self.answer([self.example(question, image, audio, sample_rate)], stop, **generation)[0]
        if not isinstance(question, (list, tuple)) or not question:
            raise ValueError(f"question: expected a string or a non-empty list of strings, got {question!r:.80}")
        n, media = len(question), {}
        for name, value in (("image", image), ("audio", audio)):
            if value is not None and not (isinstance(value, (list, tuple)) and len(value) == n):
                got = f"{type(value).__name__}" + (f" of {len(value)}" if isinstance(value, (list, tuple)) else "")
                raise ValueError(f"{name}: with {n} questions, expected a list of {n} entries (None where absent), "
                                 f"got {got}")
            media[name] = [None] * n if value is None else list(value)
        examples = [self.example(q, i, a, sample_rate, index)
                    for index, (q, i, a) in enumerate(zip(question, media["image"], media["audio"]))]
        return self.answer(examples, stop, **generation)

    def stream(self, question: str, image=None, audio=None, sample_rate: Optional[int] = None,
               stop: Sequence[str] = (), **generation) -> Iterator[str]:
        """Yield the generated text piece by piece; the pieces join to the non-streamed `text`."""
        batch = self._batch([self.example(question, image, audio, sample_rate)])
        shown, row = "", []
        for (row,) in self._decode(batch, stop, generation):
            text = _visible(self.tokenizer.decode(row), stop)
            if len(text) > len(shown):
                yield text[len(shown):]
                shown = text
        final = _cut(self.tokenizer.decode(row), stop)
        if len(final) > len(shown):
            yield final[len(shown):]

    def answer(self, examples: list[dict], stop: Sequence[str] = (), **generation) -> list[QAResult]:
        """Answer examples made by `example` (or a RecordProcessor) in one left-padded batch."""
        from mmr1.datamodules.prompt import parse_response

        batch = self._batch(examples)
        rows: list[list[int]] = [[] for _ in examples]
        for rows in self._decode(batch, stop, generation):
            pass  # decode to the end; `rows` holds every row's completion
        results = []
        for row, prompt_mask in zip(rows, batch["attention_mask"]):
            text = _cut(self.tokenizer.decode(row), stop)
            reasoning, answer = parse_response(text)
            results.append(QAResult(answer, reasoning, text, int(prompt_mask.sum()), len(row)))
        return results

    def example(self, question: str, image=None, audio=None, sample_rate: Optional[int] = None, index: int = 0) -> dict:
        """One question with its media → the example the collator batches (media decoded, limits checked)."""
        from mmr1.datamodules.processors import audio_array

        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question[{index}]: expected a non-empty string, got {question!r:.80}")
        for modality, media, processor in (("image", image, self.records.image), ("audio", audio, self.records.audio)):
            if media is not None and processor is None:
                raise ValueError(f"{modality}[{index}]: this model was built without the {modality} modality")
        if sample_rate is not None and (not isinstance(sample_rate, int) or isinstance(sample_rate, bool)
                                        or sample_rate <= 0):
            raise ValueError(f"sample_rate: expected a positive number of samples per second, got {sample_rate!r}")
        record = {"question": question, "image": str(image) if isinstance(image, Path) else image,
                  "audio": str(audio) if isinstance(audio, Path) else audio,
                  "sample_rate": sample_rate or (self.records.audio and self.records.audio.sample_rate)}
        try:
            if audio is not None and not isinstance(audio, (str, Path)):
                record["audio"] = audio_array(audio)  # [N] or [N, C] float32
            return self.records(record)
        except ValueError as e:
            raise ValueError(f"question[{index}]: {e}") from e

    # ---- internals ----------------------------------------------------------------------
    def _batch(self, examples: list[dict]) -> dict:
        for index, example in enumerate(examples):
            n_tokens = len(self.tokenizer.encode(example["question"]))
            if n_tokens > self.max_question_tokens:
                raise ValueError(f"question[{index}]: {n_tokens} tokens, longer than the limit of "
                                 f"{self.max_question_tokens}")
        batch = self.collate(examples)
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def _decode(self, batch: dict, stop: Sequence[str], options: dict) -> Iterator[list[list[int]]]:
        """After each decoding step, every row's completion ids so far (end token left out);
        a row ends at an end token or once its text holds a stop string."""
        _check_options(stop, options)
        options = dict(options)
        options.setdefault("max_new_tokens", 64)
        options.setdefault("eos_token_id", self.tokenizer.eos_id)
        eos = options["eos_token_id"]
        ends = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        rows: list[list[int]] = [[] for _ in range(batch["input_ids"].shape[0])]
        done = [False] * len(rows)
        for tokens in self.model.stream(generation=options, **batch):
            for i, token in enumerate(tokens.tolist()):
                if done[i]:
                    continue
                if token in ends:
                    done[i] = True
                    continue
                rows[i].append(token)
                done[i] = bool(stop) and any(s in self.tokenizer.decode(rows[i]) for s in stop)
            yield rows
            if all(done):
                return


def _check_options(stop: Sequence[str], generation: dict) -> None:
    """ValueError naming the first stop string or generation option that cannot work (temperature and
    top_p are checked by the sampler, which uses them)."""
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError(f"stop: expected a list of non-empty strings, got {stop!r:.80}")
    unknown = sorted(set(generation) - set(GENERATION))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown generation option; expected some of {list(GENERATION)}")
    for name, valid, expected in (
            ("max_new_tokens", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
            ("top_k", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = off)")):
        value = generation.get(name)
        if value is not None and (isinstance(value, bool) or not valid(value)):
            raise ValueError(f"{name}: expected {expected}, got {value!r}")


def _cut(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string."""
    hits = [text.index(s) for s in stop if s in text]
    return text[:min(hits)] if hits else text


def _visible(text: str, stop: Sequence[str]) -> str:
    """What can be shown while decoding: cut at a stop string, holding back a tail that may
    still become one, and a trailing partial UTF-8 character."""
    text = _cut(text, stop)
    held = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    text = text[:len(text) - held]
    return text.rstrip("\ufffd")


def answer_manifest(qa: QAPipeline, manifest: Union[str, Path], batch_size: int = 8, progress: bool = True,
                    stop: Sequence[str] = (), withhold: Sequence[str] = (), **generation
                    ) -> Iterator[tuple[dict, QAResult]]:
    """(record, result) for every record of a JSONL manifest, answered in batches with a progress bar;
    `withhold` names media ("image", "audio") answered without, to measure what the model gets from each."""
    from tqdm import tqdm

    from mmr1.datamodules.manifest import read_manifest

    withheld({}, withhold)  # checks the names before any work
    path = Path(manifest)
    records, _ = read_manifest(path, objective=None)
    missing = [line for line, record in records if not record.get("question")]
    if missing:
        raise ValueError(f"{path}:{missing[0]}: question: missing ({len(missing)} record(s) have none)")
    with tqdm(total=len(records), desc="answering", unit="q", disable=not progress) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            examples = []
            for line, record in chunk:
                try:
                    examples.append(qa.records(withheld(record, withhold), path.parent))
                except ValueError as e:
                    raise ValueError(f"{path}:{line}: {e}") from e
            yield from zip((r for _, r in chunk), qa.answer(examples, stop, **generation))
            bar.update(len(chunk))


def withheld(record: dict, withhold: Sequence[str]) -> dict:
    """The record without the media named in `withhold` ("image", "audio"): the modality ablation of
    `mmr1 eval --withhold` and the pipeline table."""
    unknown = sorted(set(withhold) - {"image", "audio"})
    if unknown:
        raise ValueError(f"withhold: expected some of ['audio', 'image'], got {unknown}")
    return {k: v for k, v in record.items() if k not in withhold}


def load(checkpoint: Union[str, Path], config: Union[str, Path, None] = None) -> QAPipeline:
    """The QA pipeline of a checkpoint folder (config.json + model.safetensors + tokenizer) or a `.ckpt`."""
    return QAPipeline.from_pretrained(checkpoint, config)
