"""Asking a model questions about images and sounds.

    qa = mmr1.load("runs/tiny")
    result = qa("How many beeps do you hear?", audio="clip.wav")
    print(result.reasoning, result.answer)

The prompt is built by the same collator and prompt format that training uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from mmr1.model import MultimodalModel

ImageInput = Any  # a path, a PIL image or a [3, H, W] tensor
AudioInput = Any  # a path or a 1-D array of samples


@dataclass
class QAResult:
    answer: Optional[str]  # the text inside <answer>…</answer>, None when the model wrote none
    reasoning: Optional[str]  # the text inside <think>…</think>
    text: str  # everything generated, special tokens included
    prompt_tokens: int
    completion_tokens: int


class QAPipeline:
    def __init__(self, model: MultimodalModel, tokenizer, max_question_tokens: int = 256):
        from mmr1.datamodules.collate import Collator
        from mmr1.datamodules.processors import AudioProcessor, ImageProcessor

        self.model = model.eval()
        self.tokenizer = tokenizer
        cfg = model.config
        self.images = ImageProcessor(cfg.vision, train=False) if cfg.vision is not None else None
        self.audio = AudioProcessor(cfg.audio) if cfg.audio is not None else None
        self.collate = Collator(tokenizer, "rl")
        self.max_question_tokens = max_question_tokens

    @classmethod
    def from_pretrained(cls, folder: Union[str, Path]) -> "QAPipeline":
        from mmr1.datamodules.tokenizer import Tokenizer

        return cls(MultimodalModel.from_pretrained(folder), Tokenizer.from_pretrained(folder))

    def __call__(self, question, image=None, audio=None, sample_rate: Optional[int] = None, **generation):
        """One question (str) → QAResult; a list of questions (with lists of media) → list of QAResult."""
        if isinstance(question, str):
            return self._batch([question], [image], [audio], sample_rate, generation)[0]
        n = len(question)
        images = list(image) if image is not None else [None] * n
        clips = list(audio) if audio is not None else [None] * n
        if len(images) != n or len(clips) != n:
            raise ValueError(f"image/audio: expected one entry per question ({n}), got {len(images)} and {len(clips)}")
        return self._batch(list(question), images, clips, sample_rate, generation)

    def stream(self, question: str, image=None, audio=None, sample_rate: Optional[int] = None,
               **generation) -> Iterator[str]:
        """Yield the generated text piece by piece as tokens are decoded."""
        batch = self._inputs([question], [image], [audio], sample_rate)
        ids: list[int] = []
        shown = ""
        for token in self.model.stream(generation=self._generation(generation), **batch):
            ids.append(int(token[0]))
            text = self.tokenizer.decode(ids)
            yield text[len(shown):]
            shown = text

    # ---- internals ----------------------------------------------------------------------
    def _batch(self, questions, images, clips, sample_rate, generation) -> list[QAResult]:
        from mmr1.datamodules.prompt import parse_response

        batch = self._inputs(questions, images, clips, sample_rate)
        prompt_width = batch["input_ids"].shape[1]
        out = self.model.generate(generation=self._generation(generation), **batch)
        results = []
        for row, prompt_mask in zip(out[:, prompt_width:].tolist(), batch["attention_mask"]):
            row = _until_eos(row, self.tokenizer.eos_id)
            text = self.tokenizer.decode(row)
            reasoning, answer = parse_response(text)
            results.append(QAResult(answer, reasoning, text, int(prompt_mask.sum()), len(row)))
        return results

    def _inputs(self, questions: Sequence[str], images, clips, sample_rate) -> dict:
        examples = []
        for i, (question, image, clip) in enumerate(zip(questions, images, clips)):
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"question[{i}]: expected a non-empty string, got {question!r}")
            n_tokens = len(self.tokenizer.encode(question))
            if n_tokens > self.max_question_tokens:
                raise ValueError(f"question[{i}]: {n_tokens} tokens, longer than the limit of "
                                 f"{self.max_question_tokens}")
            examples.append({
                "question": question,
                "pixel_values": self._image(image, i),
                "audio_values": self._audio(clip, sample_rate, i),
            })
        batch = self.collate(examples)
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def _image(self, image, i: int):
        if image is None:
            return None
        if self.images is None:
            raise ValueError(f"image[{i}]: this model was built without the image modality")
        return self.images(image)

    def _audio(self, clip, sample_rate, i: int):
        if clip is None:
            return None
        if self.audio is None:
            raise ValueError(f"audio[{i}]: this model was built without the audio modality")
        waveform, _ = self.audio(clip, sample_rate)
        return waveform

    def _generation(self, options: dict) -> dict:
        options = dict(options)
        options.setdefault("max_new_tokens", 64)
        options.setdefault("eos_token_id", self.tokenizer.eos_id)
        return options


def _until_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos)] if eos in row else row


def load(folder: Union[str, Path]) -> QAPipeline:
    """The QA pipeline of a checkpoint folder (config.json + model.safetensors + tokenizer)."""
    return QAPipeline.from_pretrained(folder)
