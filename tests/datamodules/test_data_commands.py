import json
import re

import pytest

from mmr1.datamodules.commands import main
from mmr1.datamodules.tokenizer import Tokenizer


def test_synth_then_check(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--n", "20", "--seed", "4", "--difficulty", "2"]) == 0
    manifest = tmp_path / "train.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) == 20 and all(r["difficulty"] == 2 for r in records)
    assert main(["check", str(manifest), "--objective", "sft"]) == 0
    out = capsys.readouterr().out
    assert "20 records, 20 ok, 0 failure(s)" in out and "audio seconds: min" in out and "answers (" in out
    images = sum("image" in r for r in records)
    assert re.search(rf"^image\s+{images}$", out, re.MULTILINE)


def test_check_reports_every_failure_with_its_line(tmp_path, capsys):
    main(["synth", "--out", str(tmp_path), "--n", "5", "--split", "val"])
    manifest = tmp_path / "val.jsonl"
    lines = manifest.read_text().splitlines()
    corrupt = json.loads(lines[1])
    corrupt["image"] = "images/corrupt.png"
    (tmp_path / "images" / "corrupt.png").write_bytes(b"not an image")
    lines[1] = json.dumps(corrupt)
    lines.append("{broken")
    lines.append(json.dumps({"question": "How many?", "answer": "2"}))
    manifest.write_text("\n".join(lines) + "\n")
    assert main(["check", str(manifest), "--objective", "rl"]) == 1
    out = capsys.readouterr().out
    assert "7 records, 5 ok, 2 failure(s)" in out
    assert "FAIL line 2: image:" in out and "FAIL line 6: record: not valid JSON" in out
    assert main(["check", str(manifest), "--objective", "preference"]) == 1
    assert "FAIL line 7: chosen: missing" in capsys.readouterr().out


def test_tokenizer_command(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    main(["synth", "--out", str(tmp_path), "--n", "10"])
    out = tmp_path / "tok"
    assert main(["tokenizer", "--corpus", str(corpus), str(tmp_path / "train.jsonl"), "--vocab-size", "350",
                 "--out", str(out)]) == 0
    tok = Tokenizer.from_pretrained(out)
    assert len(tok) <= 350 and tok.token_id("<think>") == 7
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox") / 2
    assert main(["tokenizer", "--corpus", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_usage_errors_exit_nonzero():
    with pytest.raises(SystemExit) as exit:
        main(["synth", "--n", "3"])
    assert exit.value.code == 2
