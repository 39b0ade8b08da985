"""Scoring generated answers: accuracy (numbers compared by exact value), exact match, token F1,
BLEU, ROUGE-L, CIDEr-D, response perplexity, pass@k and the majority answer of k samples (maj@k).

Text metrics take plain strings; corpus metrics (BLEU, ROUGE-L, CIDEr) take one prediction
and a list of references per item. The R1 response format and the accuracy of a response are the
rule rewards' (`mmr1.rl.rewards`), which reuse `answers_match`.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from fractions import Fraction
from typing import Iterable, Optional, Sequence, Union

import torch

# A decimal with an optional sign and currency sign; thousands separators only in full groups of three
# (`1,234`, `12,345,678`), never in `1,2,3` or `12,34`.
_NUMBER = re.compile(r"([-+]?)\$?((?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?)")
_FRACTION = re.compile(r"([-+]?\d+)\s*/\s*(\d+)")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed (SQuAD's normalisation, for EM, F1 and BLEU)."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def parse_number(text: str) -> Optional[Fraction]:
    """The exact value of `3`, `-2.5`, `.5`, `7.`, `1,234`, `$1,000.50`, `3/4`; None for anything else
    (`5%`, `(5)`, `1,2,3`, `12,34`, `3/0`, `1e5`, `1 2`)."""
    text = text.strip().replace("\u2212", "-")  # a typographic minus
    text = text[:-1] if text.endswith(".") else text  # a sentence's full stop: "7."
    fraction = _FRACTION.fullmatch(text)
    if fraction:
        denominator = int(fraction.group(2))
        return Fraction(int(fraction.group(1)), denominator) if denominator else None
    number = _NUMBER.fullmatch(text)
    if not number or not any(c.isdigit() for c in number.group(2)):
        return None
    return Fraction(number.group(1) + number.group(2).replace(",", ""))


def normalize_answer(text: str) -> str:
    """Lower case, whitespace collapsed, a trailing full stop (or ! ?) dropped; inner punctuation kept, so
    `A/B` stays apart from `AB`."""
    return " ".join(text.lower().split()).rstrip(".!?").rstrip()


def answer_key(answer: str) -> Union[Fraction, str]:
    """What answers are compared by: a number's exact value (`parse_number`), else `normalize_answer`'s text. Two
    answers match exactly when their keys are equal (a value never equals a text)."""
    value = parse_number(answer)
    return value if value is not None else normalize_answer(answer)


def answers_match(pred: Optional[str], ref: str) -> bool:
    """Numbers compare by exact value (`3` == `3.0` == `6/2`, `1234567` != `1234568`); a number never
    matches a non-number (`5%`, `(5)`); other text compares after `normalize_answer`."""
    return pred is not None and answer_key(pred) == answer_key(ref)


def majority_answer(completions: Sequence[str]) -> Optional[str]:
    """Self-consistency (Wang et al. 2023; DeepSeek-R1's cons@k): the answer that most of the completions give,
    answers grouped by `answer_key`; a tie goes to the answer given first; None when no completion has an answer
    (`parse_response`)."""
    from mmr1.datamodules.prompt import parse_response

    votes: dict = {}  # answer_key -> [count, the first answer with that key]
    for completion in completions:
        _, answer = parse_response(completion)
        if answer:
            vote = votes.setdefault(answer_key(answer), [0, answer])
            vote[0] += 1
    if not votes:
        return None
    return max(votes.values(), key=lambda vote: vote[0])[1]  # max keeps the first of equal counts


def correct(completion: str, reference: str) -> bool:
    """The response is well-formed (`parse_response`) with a non-empty answer matching the reference
    (`answers_match`): the accuracy of `mmr1 eval`, the pipeline table, GRPO validation and the RL reward."""
    from mmr1.datamodules.prompt import parse_response

    _, answer = parse_response(completion)
    return bool(answer) and answers_match(answer, reference)


def well_formed(completion: str) -> bool:
    """Exactly one non-empty <think>…</think> then one <answer>…</answer> (an empty think is no reasoning)."""
    from mmr1.datamodules.prompt import parse_response

    reasoning, _ = parse_response(completion)
    return bool(reasoning)


def accuracy(completions: Sequence[str], references: Sequence[str]) -> float:
    """Share of `correct` responses (0 for none)."""
    return sum(correct(c, r) for c, r in zip(completions, references)) / max(1, len(completions))


def format_rate(completions: Sequence[str]) -> float:
    """Share of `well_formed` responses (0 for none)."""
    return sum(map(well_formed, completions)) / max(1, len(completions))


def exact_match(pred: Optional[str], ref: str) -> bool:
    """The normalised strings are equal (no number semantics: `3.0` != `3`)."""
    return pred is not None and normalize(pred) == normalize(ref)


def token_f1(pred: Optional[str], ref: str) -> float:
    """SQuAD-style F1 of the bags of normalised tokens."""
    pred_tokens, ref_tokens = normalize(pred or "").split(), normalize(ref).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def bleu(preds: Sequence[str], refs: Sequence[Sequence[str]], n_gram: int = 4) -> float:
    """Corpus BLEU (torchmetrics), on normalised text."""
    from torchmetrics.text import BLEUScore

    score = BLEUScore(n_gram=n_gram)
    return float(score([normalize(p) for p in preds], [[normalize(r) for r in rs] for rs in refs]))


def rouge_l(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Mean ROUGE-L F-measure (torchmetrics; best reference per item; no nltk needed)."""
    from torchmetrics.text import ROUGEScore

    score = ROUGEScore(rouge_keys=("rougeL",), accumulate="best")
    return float(score(list(preds), [list(rs) for rs in refs])["rougeL_fmeasure"])


def cider(preds: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D (Vedantam et al. 2015, as in pycocoevalcap): tf-idf n-gram vectors (n = 1..4,
    idf over the items' reference sets), clipped cosine similarity, a Gaussian length penalty
    (on token counts), averaged over n and references, ×10; the mean over items."""
    if len(preds) != len(refs):
        raise ValueError(f"cider: {len(preds)} predictions but {len(refs)} reference lists")
    ref_counts = [[_ngrams(r, n) for r in rs] for rs in refs]
    document_frequency = Counter(g for item in ref_counts for g in {g for r in item for g in r})
    log_items = math.log(len(preds)) if preds else 0.0

    def vector(counts: Counter) -> tuple[list[dict], list[float]]:
        vecs: list[dict] = [{} for _ in range(n)]
        for gram, tf in counts.items():
            vecs[len(gram) - 1][gram] = tf * (log_items - math.log(max(1.0, document_frequency[gram])))
        return vecs, [math.sqrt(sum(v * v for v in vec.values())) for vec in vecs]

    scores = []
    for pred, item_refs, item_counts in zip(preds, refs, ref_counts):
        hyp_vec, hyp_norm = vector(_ngrams(pred, n))
        total = 0.0
        for ref, counts in zip(item_refs, item_counts):
            ref_vec, ref_norm = vector(counts)
            delta = len(normalize(pred).split()) - len(normalize(ref).split())
            penalty = math.exp(-(delta ** 2) / (2 * sigma ** 2))
            for k in range(n):
                overlap = sum(min(v, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, v in hyp_vec[k].items())
                if hyp_norm[k] and ref_norm[k]:
                    overlap /= hyp_norm[k] * ref_norm[k]
                total += overlap * penalty / n
        scores.append(10.0 * total / max(1, len(item_refs)))
    return sum(scores) / len(scores) if scores else 0.0


def _ngrams(text: str, n: int) -> Counter:
    tokens = normalize(text).split()
    return Counter(tuple(tokens[i:i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 0 < k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 0 < k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.inference_mode()
def response_nll(model, batch: dict) -> tuple[float, int]:
    """(summed negative log-likelihood, token count) of the labelled tokens of an `sft` batch,
    teacher-forced: the logits at t predict the label at t + 1."""
    from mmr1.model import media_inputs

    out, _ = model(batch["input_ids"], batch["attention_mask"], **media_inputs(batch))
    logits, labels = out.logits[:, :-1].float(), batch["labels"][:, 1:]  # [B, T-1, V], [B, T-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
    return float(nll), int((labels != -100).sum())


def perplexity(model, batches: Iterable[dict]) -> float:
    """exp(mean NLL per response token) over every batch (teacher-forced; see `response_nll`)."""
    total, count = 0.0, 0
    for batch in batches:
        nll, n = response_nll(model, batch)
        total, count = total + nll, count + n
    if count == 0:
        raise ValueError("perplexity: no labelled response tokens")
    return math.exp(total / count)
