"""The qa / eval / predict / export commands, called through the command table without its error guard
(so input errors surface as the exceptions `mmr1.cli.main` prints as one line)."""

import json

import pytest
import torch

from mmr1.cli import handler
from mmr1.datamodules import synth


def run(argv: list[str]) -> int:
    return handler(argv[0])(argv[1:])


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return synth.write(tmp_path_factory.mktemp("data"), 4, split="test")


def test_qa_one_question_as_json(tiny_checkpoint, capsys):
    assert run(["qa", "--checkpoint", str(tiny_checkpoint), "--sample", "--json", "--max-new-tokens", "5",
                "--do-sample", "--temperature", "0.7", "--top-k", "20", "--top-p", "0.9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["completion_tokens"] <= 5 and out["expected"] is not None


def test_qa_manifest_writes_predictions(tiny_checkpoint, manifest, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    assert run(["qa", "--checkpoint", str(tiny_checkpoint), "--manifest", str(manifest), "--output", str(preds),
                "--batch-size", "3", "--max-new-tokens", "4"]) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 4 and {"id", "answer", "reasoning", "text", "reference", "correct"} <= set(rows[0])
    assert "answered 4 questions" in capsys.readouterr().out


def test_eval_prints_metrics_as_the_last_line(tiny_checkpoint, manifest, tmp_path, capsys):
    assert run(["eval", "--checkpoint", str(tiny_checkpoint), "--manifest", str(manifest), "--samples", "2",
                "--max-new-tokens", "4", "--output", str(tmp_path / "p.jsonl"), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("accuracy", "format_rate", "f1", "bleu", "rouge_l", "cider", "perplexity", "pass@1", "pass@2", "maj@2"):
        assert key in summary, key
    assert summary["n"] == 4 and summary["perplexity"] > 1 and 0 <= summary["pass@2"] <= 1
    assert summary["maj@2"] <= summary["pass@2"]  # a right majority is a right sample
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 4


def test_eval_and_qa_of_an_empty_manifest_are_errors(tiny_checkpoint, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for command in ("eval", "qa"):
        with pytest.raises(ValueError, match="empty.jsonl: empty manifest"):
            run([command, "--checkpoint", str(tiny_checkpoint), "--manifest", str(empty), "--no-progress"])


@pytest.mark.parametrize("argv, message", [
    (["--question", "How many?", "--image", "missing.png"], "no such file"),
    (["--question", "word " * 400], "longer than the limit"),
    (["--question", "How many?", "--audio", "{bad}"], "cannot read audio"),
    (["--manifest", "missing.jsonl"], "manifest not found"),
])
def test_qa_input_errors_raise_what_the_cli_prints_as_one_line(tiny_checkpoint, tmp_path, argv, message):
    bad = tmp_path / "clip.mp4a"
    bad.write_bytes(b"\x00" * 64)
    argv = [a.format(bad=bad) for a in argv]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(["qa", "--checkpoint", str(tiny_checkpoint), *argv])


def test_export_int8_and_pruned_folder_loads_and_answers(tiny_checkpoint, tmp_path, capsys):
    from mmr1.inference import load

    out = tmp_path / "int8"
    assert run(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--quantize", "int8",
                "--prune", "0.5"]) == 0
    assert "sparsity 0.500" in capsys.readouterr().out
    qa = load(out)
    assert isinstance(qa.model.core.layers[0].mlp.up_proj, torch.ao.nn.quantized.dynamic.Linear)
    assert qa("How many?", max_new_tokens=4).completion_tokens <= 4


def test_eval_withhold_answers_without_the_named_media(tiny_checkpoint, tmp_path):
    from mmr1.datamodules.synth import write
    from mmr1.evaluate import evaluate
    from mmr1.inference import answer_manifest, load

    manifest = write(tmp_path / "synth", 3, seed=0, split="test")
    qa = load(tiny_checkpoint)
    full = [r.prompt_tokens for _, r in answer_manifest(qa, manifest, progress=False, max_new_tokens=2)]
    blind = [r.prompt_tokens for _, r in answer_manifest(qa, manifest, progress=False, withhold=("image", "audio"),
                                                         max_new_tokens=2)]
    assert all(b < f for b, f in zip(blind, full))  # no <image>/<audio> markers and no media prefix
    summary = evaluate(qa, manifest, progress=False, withhold=["audio"], max_new_tokens=2)
    assert summary["n"] == 3
    with pytest.raises(ValueError, match="withhold: expected some of"):
        list(answer_manifest(qa, manifest, progress=False, withhold=("smell",)))


def test_predict_writes_one_line_per_record(tiny_checkpoint, manifest, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    assert run(["predict", "--ckpt_path", str(tiny_checkpoint), "--manifest", str(manifest), "--output", str(preds),
                "--max-new-tokens", "4", "--no-progress"]) == 0
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    assert all({"id", "reasoning", "answer"} <= set(row) for row in rows)


def test_sampled_scores_counts_pass_at_k_and_the_majority_answer(monkeypatch):
    """Scripted samples, three per record: A right, wrong, right; B wrong (4), right, wrong (4); C has no answer."""
    from mmr1 import evaluate
    from mmr1.inference import QAResult

    records = [{"question": "q", "answer": "3"}, {"question": "q", "answer": "5"}, {"question": "q"}]
    draws = iter([["3", "4", "3.0"], ["4", "5", "4"], ["1", "1", "1"]][r][s] for s in range(3) for r in range(3))

    def answer_manifest(qa, manifest, batch_size, progress, **generation):
        assert generation["do_sample"] is True
        for record in records:
            answer = next(draws)
            yield record, QAResult(answer, "so", f"<think>so</think><answer>{answer}</answer>", 1, 1)

    monkeypatch.setattr(evaluate, "answer_manifest", answer_manifest)
    scores = evaluate.sampled_scores(None, "m.jsonl", 3, 8, False)
    # pass@1 = mean(2/3, 1/3); pass@3 = 1 for both; maj@3: A's majority 3 is right, B's majority 4 is wrong
    assert scores == pytest.approx({"pass@1": 0.5, "pass@3": 1.0, "maj@3": 0.5})
