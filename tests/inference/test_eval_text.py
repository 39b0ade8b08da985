"""`mmr1 eval --text`: the core's token-weighted perplexity over a plain-text file, checked by hand."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel
from mmr1.cli import handler

def run(argv: list[str]) -> int:
    return handler(argv[0])(argv[1:])


DOCUMENTS = ["The cat sat on the mat.", "Two plus two is four.\nThree plus three is six.",
             "A much longer document about numbers: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and then some more words."]


def hand_perplexity(folder, documents: list[str]) -> float:
    """exp(summed NLL / predicted tokens), one unpadded document at a time through the core alone."""
    model, tokenizer = MultimodalModel.from_pretrained(folder).eval(), Tokenizer.from_pretrained(folder)
    total, count = 0.0, 0
    for text in documents:
        ids = torch.tensor(tokenizer.encode(text) + [tokenizer.eos_id])[None]  # [1, T]
        with torch.no_grad():
            logits = model.core(ids).logits[0, :-1]  # [T-1, V], at t predicting token t+1
        total += F.cross_entropy(logits.float(), ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return math.exp(total / count)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_eval_text_prints_the_perplexity_of_every_document(tiny_checkpoint, tmp_path, capsys, suffix):
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".txt":
        path.write_text("\n\n".join(DOCUMENTS) + "\n")
    else:
        path.write_text("\n".join(json.dumps({"text": d}) for d in DOCUMENTS) + "\n")
    assert run(["eval", "--checkpoint", str(tiny_checkpoint), "--text", str(path), "--batch-size", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["documents"] == 3
    assert summary["perplexity"] == pytest.approx(hand_perplexity(tiny_checkpoint, DOCUMENTS), rel=1e-4)


def test_eval_text_refuses_manifest_only_flags(tiny_checkpoint, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(DOCUMENTS[0])
    with pytest.raises(ValueError, match="--text: scores perplexity only"):
        run(["eval", "--checkpoint", str(tiny_checkpoint), "--text", str(path), "--samples", "2"])
    with pytest.raises(ValueError, match="argument --manifest: not allowed with argument --text"):
        run(["eval", "--checkpoint", str(tiny_checkpoint), "--text", str(path), "--manifest", str(path)])
