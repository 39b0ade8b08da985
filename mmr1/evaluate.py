"""Scoring a model on a manifest: answer every question (greedy), compare with the references.

Every response is read by one rule (`mmr1.datamodules.prompt.parse_response`: a malformed response
has no answer). Accuracy and format_rate are `mmr1.metrics.accuracy` / `format_rate`, the numbers
the pipeline table and GRPO validation report (numbers compare by exact value); EM, token F1, BLEU,
ROUGE-L and CIDEr-D compare that answer with the reference answer; perplexity is
teacher-forced on the reference responses (reasoning + answer); with `samples = k` every
question is also sampled k times for pass@1, pass@k and maj@k (the majority answer's accuracy).
`text_perplexity` scores plain text (the core's token-weighted perplexity over a file's documents).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

from mmr1 import metrics
from mmr1.inference import QAPipeline, QAResult, answer_manifest, withheld


def evaluate(qa: QAPipeline, manifest: Union[str, Path], batch_size: int = 8, samples: int = 0,
             output: Union[str, Path, None] = None, progress: bool = True, withhold: Sequence[str] = (),
             **generation) -> dict:
    """Summary metrics over a manifest; one prediction per line to `output` when given; `withhold`
    answers without the named media ("image", "audio")."""
    greedy = {k: v for k, v in generation.items() if k not in ("do_sample", "temperature", "top_k", "top_p")}
    answers = answer_manifest(qa, manifest, batch_size, progress, withhold=withhold, **greedy)
    rows = [prediction(record, result) for record, result in answers]
    if output is not None:
        write_predictions(rows, output)
    summary: dict = {"n": len(rows), "format_rate": metrics.format_rate([r["text"] for r in rows])}
    scored = [r for r in rows if r["reference"] is not None]
    if scored:
        preds, refs = [r["answer"] or "" for r in scored], [r["reference"] for r in scored]
        summary.update(
            n_references=len(scored),
            accuracy=metrics.accuracy([r["text"] for r in scored], refs),
            exact_match=_mean(metrics.exact_match(r["answer"], r["reference"]) for r in scored),
            f1=_mean(metrics.token_f1(p, ref) for p, ref in zip(preds, refs)),
            bleu=metrics.bleu(preds, [[ref] for ref in refs]),
            rouge_l=metrics.rouge_l(preds, [[ref] for ref in refs]),
            cider=metrics.cider(preds, [[ref] for ref in refs]),
            perplexity=reference_perplexity(qa, manifest, batch_size, withhold),
        )
    if samples:
        if withhold:
            raise ValueError("withhold: pass@k samples use every medium; score them in a run without --withhold")
        summary.update(sampled_scores(qa, manifest, samples, batch_size, progress, **generation))
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in summary.items()}


def reference_perplexity(qa: QAPipeline, manifest: Union[str, Path], batch_size: int,
                         withhold: Sequence[str] = ()) -> float:
    """Teacher-forced perplexity of the reference responses of the records that have an answer
    (without the `withhold` media)."""
    from mmr1.datamodules.collate import Collator
    from mmr1.datamodules.manifest import read_manifest

    path = Path(manifest)
    records = [withheld(record, withhold) for _, record in read_manifest(path, objective=None)[0]
               if record.get("answer")]
    collate = Collator(qa.tokenizer, "sft", max_length=qa.model.config.core.max_seq_len,
                       encode_text=qa.model.config.text is not None)
    batches = (collate([qa.records(r, path.parent) for r in records[i:i + batch_size]])
               for i in range(0, len(records), batch_size))
    return metrics.perplexity(qa.model, batches)


def text_perplexity(model, tokenizer, path: Union[str, Path], batch_size: int = 8) -> dict:
    """exp(mean NLL per predicted token) of the core over the documents of a `.txt` (blank-line blocks) or
    `.jsonl` (`text`, or question/answer) file; documents ending in </s>, cut into max_seq_len windows
    (the first token of each window is context only)."""
    from mmr1.datamodules.collate import pad
    from mmr1.datamodules.text import encode_document, read_documents

    window = model.config.core.max_seq_len
    documents = [encode_document(tokenizer, text) for text in read_documents([path], "blank_line")]
    rows = [ids[i:i + window] for ids in documents for i in range(0, len(ids), window)]
    batches = []
    for i in range(0, len(rows), batch_size):
        ids, mask = pad(rows[i:i + batch_size], tokenizer.pad_id)  # [B, T]
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(~mask, -100)})
    return {"documents": len(documents), "tokens": sum(len(row) - 1 for row in rows),
            "perplexity": metrics.perplexity(model, batches)}


def sampled_scores(qa: QAPipeline, manifest: Union[str, Path], k: int, batch_size: int, progress: bool,
                   **generation) -> dict:
    """Over the records with an answer, from k sampled responses per question: pass@1 and pass@k (the unbiased
    estimator with n = k) and maj@k, the share whose majority answer (`metrics.majority_answer`: self-consistency,
    DeepSeek-R1's cons@k) matches the reference."""
    if k < 1:
        raise ValueError(f"--samples: expected a positive number of samples, got {k}")
    generation = {**generation, "do_sample": True}
    sampled: dict[int, list[str]] = {}  # record index -> its k responses
    references: dict[int, str] = {}
    for _ in range(k):
        for index, (record, result) in enumerate(answer_manifest(qa, manifest, batch_size, progress, **generation)):
            if record.get("answer") is not None:
                sampled.setdefault(index, []).append(result.text)
                references[index] = record["answer"]
    if not sampled:
        return {}
    correct = {index: sum(metrics.correct(text, references[index]) for text in texts)
               for index, texts in sampled.items()}
    return {"pass@1": _mean(metrics.pass_at_k(k, c, 1) for c in correct.values()),
            f"pass@{k}": _mean(metrics.pass_at_k(k, c, k) for c in correct.values()),
            f"maj@{k}": _mean(metrics.answers_match(metrics.majority_answer(texts), references[index])
                              for index, texts in sampled.items())}


def prediction(record: dict, result: QAResult) -> dict:
    """One line of a predictions file: the record's id, question, reference answer and reasoning, the model's
    response."""
    reference = record.get("answer")
    return {"id": record.get("id"), "question": record["question"], "reference": reference,
            "reference_reasoning": record.get("reasoning"),
            "answer": result.answer, "reasoning": result.reasoning, "text": result.text,
            "correct": None if reference is None else metrics.correct(result.text, reference)}


def write_predictions(rows: list[dict], output: Union[str, Path]) -> None:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _mean(values) -> Optional[float]:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else None
