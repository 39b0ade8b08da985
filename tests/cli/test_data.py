import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.cli import main as mmr1_main


def main(argv: list[str]) -> int:
    """`mmr1 data ARGV` through the command table (one-line errors, exit status)."""
    return mmr1_main(["data", *argv])


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


def test_usage_errors_are_one_line_and_exit_2(capsys):
    assert main(["synth", "--n", "3"]) == 2
    assert capsys.readouterr().err == "mmr1 data: the following arguments are required: --out\n"


@pytest.fixture
def nan_wav_manifest(tmp_path):
    """A synthetic manifest whose second record's audio is a float WAV of NaNs."""
    main(["synth", "--out", str(tmp_path), "--n", "4", "--difficulty", "3"])
    manifest = tmp_path / "train.jsonl"
    lines = manifest.read_text().splitlines()
    soundfile.write(tmp_path / "audio" / "nan.wav", np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    record = json.loads(lines[1])
    record["audio"] = "audio/nan.wav"
    lines[1] = json.dumps(record)
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_check_rejects_a_nan_wav_with_its_line(nan_wav_manifest, capsys):
    assert main(["check", str(nan_wav_manifest), "--objective", "sft"]) == 1
    out = capsys.readouterr().out
    assert "4 records, 3 ok, 1 failure(s)" in out and re.search(r"FAIL line 2: audio: .*nan.wav: samples hold NaN", out)


def test_fit_stops_at_the_nan_wav_with_its_line(nan_wav_manifest):
    import lightning as L

    from mmr1.datamodules.datamodules import SFTDataModule
    from mmr1.objectives import SFTModule

    module = SFTModule(preset="tiny", overrides={"core": {"n_layers": 1}})
    data = SFTDataModule(train_manifest=str(nan_wav_manifest), config=module.config, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"train.jsonl:2: audio: .*nan.wav: samples hold NaN or Inf"):
        trainer.fit(module, data)


def test_check_warns_about_unknown_fields_and_fails_on_an_empty_manifest(tmp_path, capsys, caplog):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"question": "How many?", "answer": "2", "imagee": "a.png"}) + "\n")
    with caplog.at_level(logging.WARNING):
        assert main(["check", str(manifest)]) == 0
    assert any("m.jsonl:1: unknown field 'imagee' is ignored (did you mean 'image'?)" in r.getMessage()
               for r in caplog.records)
    manifest.write_text("")
    assert main(["check", str(manifest)]) == 2
    assert "m.jsonl: empty manifest" in capsys.readouterr().err


def test_check_checks_lengths_for_the_checkpoint_it_is_given(tmp_path, capsys):
    from mmr1.config import Config
    from mmr1.model import MultimodalModel

    folder = MultimodalModel(Config.from_name("tiny", text={"max_positions": 16})).save_pretrained(
        tmp_path / "ckpt", Tokenizer.default())
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"question": "How many " + "red " * 20 + "shapes?", "answer": "2"}) + "\n")
    assert main(["check", str(manifest), "--objective", "sft"]) == 0  # tiny takes 128 text tokens
    assert main(["check", str(manifest), "--objective", "sft", "--checkpoint", str(folder)]) == 1
    assert "text.max_positions=16" in capsys.readouterr().out
    assert main(["check", str(manifest), "--objective", "sft", "--max-length", "10"]) == 1
    assert "longer than max_length=10" in capsys.readouterr().out


def test_check_piped_into_head_ends_quietly(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"question": "Q?", "answer": "1", "image": f"missing-{i}.png"}) + "\n"
                                for i in range(3000)))  # 3000 FAIL lines: far more than a pipe buffer
    result = subprocess.run(f"{sys.executable} -m mmr1 data check {manifest} | head -n 1", shell=True,
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.stdout.startswith(f"{manifest}: 3000 records, 0 ok, 3000 failure(s)")
    assert result.stderr == ""
