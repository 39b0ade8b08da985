"""QAPipeline: batched == one by one == streamed (greedy), stop strings, sampling options, loading, errors."""

import json

import numpy as np
import pytest
import torch

from mmr1.datamodules.synth import Synth
from mmr1.inference import QAPipeline, answer_manifest, load


@pytest.fixture(scope="module")
def qa(tiny_checkpoint) -> QAPipeline:
    return load(tiny_checkpoint)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """Questions of different lengths; some rows without image or audio, clips of different lengths."""
    synth = Synth(seed=0, split="test", image_size=32)
    rows = [synth.record(i) for i in range(4)]
    rows[1]["image"] = None
    rows[3]["audio"] = None
    return rows


def test_batched_answers_equal_one_by_one(qa, records):
    # Left padding + RoPE positions counted over real tokens only make each row independent of
    # its neighbours; with eos disabled every row generates all 8 tokens, compared as text.
    options = dict(max_new_tokens=8, eos_token_id=None)
    batched = qa([r["question"] for r in records], image=[r["image"] for r in records],
                 audio=[r["audio"] for r in records], sample_rate=16000, **options)
    single = [qa(r["question"], image=r["image"], audio=r["audio"], sample_rate=16000, **options) for r in records]
    assert [b.completion_tokens for b in batched] == [8] * len(records)
    assert len({b.text for b in batched}) > 1  # the rows really differ
    for b, s in zip(batched, single):
        assert (b.text, b.prompt_tokens) == (s.text, s.prompt_tokens)


def test_batched_token_ids_and_logits_equal_one_by_one(qa, records):
    examples = [qa.example(r["question"], r["image"], r["audio"], 16000) for r in records]
    batch = qa._batch(examples)
    options = {"max_new_tokens": 8, "eos_token_id": None}
    width = batch["input_ids"].shape[1]
    with torch.inference_mode():
        out, _ = qa.model(**batch, logits_to_keep=1)
        generated = qa.model.generate(generation=options, **batch)[:, width:]  # [B, 8]
        for row, example in enumerate(examples):
            alone_batch = qa._batch([example])
            alone, _ = qa.model(**alone_batch, logits_to_keep=1)
            # fp32 sums run in another order at another batch shape: 3e-5 apart seen on the built-in test records
            torch.testing.assert_close(out.logits[row], alone.logits[0], atol=1e-4, rtol=1e-4)
            alone_ids = qa.model.generate(generation=options, **alone_batch)[0, alone_batch["input_ids"].shape[1]:]
            assert generated[row].tolist() == alone_ids.tolist()


def test_stream_joins_to_the_answer_text(qa, records):
    r = records[0]
    for options in (dict(max_new_tokens=16), dict(max_new_tokens=16, eos_token_id=None)):
        pieces = list(qa.stream(r["question"], image=r["image"], audio=r["audio"], sample_rate=16000, **options))
        whole = qa(r["question"], image=r["image"], audio=r["audio"], sample_rate=16000, **options)
        assert "".join(pieces) == whole.text and len(pieces) >= 1


def test_stop_strings_cut_batched_and_streamed_text(qa, records):
    r = records[0]
    full = qa(r["question"], image=r["image"], max_new_tokens=16, eos_token_id=None).text
    stop = full[5:8]  # a string the model is known to produce
    cut = qa(r["question"], image=r["image"], max_new_tokens=16, eos_token_id=None, stop=[stop])
    assert cut.text == full[:full.index(stop)] and cut.completion_tokens < 16
    assert "".join(qa.stream(r["question"], image=r["image"], max_new_tokens=16, eos_token_id=None,
                             stop=[stop])) == cut.text


def test_sampling_options_are_passed_through(qa, records):
    q = records[0]["question"]

    def sample(seed, **options):
        return qa(q, max_new_tokens=10, eos_token_id=None, do_sample=True,
                  generator=torch.Generator().manual_seed(seed), **options).text

    assert sample(1) == sample(1)  # seeded sampling is reproducible
    greedy = qa(q, max_new_tokens=10, eos_token_id=None).text
    assert sample(1, top_k=1) == greedy and sample(2, top_p=1e-6) == greedy  # only the argmax left
    assert sample(3, temperature=1e-4) == greedy
    with pytest.raises(ValueError, match="temperature"):
        qa(q, do_sample=True, temperature=0.0)


def test_input_errors_are_one_line_value_errors(qa, tmp_path):
    with pytest.raises(ValueError, match="cannot read image"):
        qa("How many?", image=str(tmp_path / "missing.png"))
    bad = tmp_path / "clip.xyz"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot read audio"):
        qa("How many?", audio=str(bad))
    with pytest.raises(ValueError, match="longer than the limit"):
        qa("word " * 400)
    with pytest.raises(ValueError, match="max_seconds"):
        qa("How many?", audio=np.zeros(16000 * 31, dtype=np.float32))


def test_manifest_is_answered_in_batches(qa, tmp_path):
    from mmr1.datamodules import synth

    manifest = synth.write(tmp_path, 3, split="test")
    pairs = list(answer_manifest(qa, manifest, batch_size=2, progress=False, max_new_tokens=4))
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [record["id"] for record, _ in pairs] == [line["id"] for line in lines]
    for (_, result), line in zip(pairs, lines):
        media = {k: str(tmp_path / line[k]) for k in ("image", "audio") if line.get(k)}
        assert result.text == qa(line["question"], max_new_tokens=4, **media).text


def test_lightning_ckpt_loads_weights_only(qa, tiny_checkpoint, tmp_path):
    from mmr1.datamodules.tokenizer import Tokenizer

    state = {f"model.{k}": v for k, v in qa.model.state_dict().items()}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises(ValueError, match="no config"):
        load(ckpt)
    from_ckpt = load(ckpt, tiny_checkpoint / "config.json")
    assert from_ckpt("How many?", max_new_tokens=6).text == qa("How many?", max_new_tokens=6).text
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())  # found beside it
    Tokenizer.default().save(tmp_path)
    assert load(ckpt)("How many?", max_new_tokens=6).text == qa("How many?", max_new_tokens=6).text
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nothing.ckpt")


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
     r"model.safetensors: damaged or truncated safetensors file"),
    (lambda f: (f / "tokenizer.json").unlink(), r"no tokenizer.json, and no other tokenizer files"),
    (lambda f: (f / "tokenizer.json").write_text('{"version": "1.0", "trunc'), r"tokenizer.json: damaged"),
    (lambda f: (f / "config.json").write_text('{"architecture": "Multi'), r"config.json: damaged, not valid JSON"),
])
def test_a_damaged_checkpoint_folder_names_the_file(tiny_checkpoint, tmp_path, damage, message):
    import shutil

    folder = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    damage(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        load(folder)
    assert "\n" not in str(error.value)


def test_audio_arrays_in_every_documented_layout_and_integer_pcm_answer_alike(qa):
    t = np.arange(16000) / 16000
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # [N]
    options = dict(max_new_tokens=6, eos_token_id=None)
    expected = qa("How many beeps?", audio=mono, **options)
    assert qa.example("Q?", audio=mono)["audio_values"].shape == (16000,)
    pcm = np.round(mono * 32767).astype(np.int16)
    for audio in (mono[:, None], mono[None, :], np.stack([mono, mono]), np.stack([mono, mono], axis=1),
                  torch.from_numpy(mono)[None, :], pcm, torch.from_numpy(pcm)[None, :]):
        example = qa.example("Q?", audio=audio)
        torch.testing.assert_close(example["audio_values"], torch.from_numpy(mono), atol=1e-4, rtol=0)
        assert qa("How many beeps?", audio=audio, **options).text == expected.text
    with pytest.raises(ValueError, match=r"question\[0\]: audio array: expected \[N\], \[N, C\] or \[C, N\] with "
                                         r"C <= 8 channels, got shape \[1000, 16000\]"):
        qa("Q?", audio=np.zeros((1000, 16000), np.float32))


@pytest.mark.parametrize("call, message", [
    (dict(question=None), r"question: expected a string or a non-empty list of strings, got None"),
    (dict(question=["Q?", 3]), r"question\[1\]: expected a non-empty string, got 3"),
    (dict(question="Q?", image=123), r"question\[0\]: image: expected a path, a PIL image or a \[3, H, W\] tensor"),
    (dict(question="Q?", image="__empty__"), r"question\[0\]: image: empty image \(0x0 pixels\)"),
    (dict(question="Q?", image=torch.full((3, 8, 8), float("nan"))), r"question\[0\]: image: pixels hold NaN"),
    (dict(question="Q?", audio=np.full(1600, np.nan, np.float32)), r"question\[0\]: audio: audio array: samples "
                                                                    r"hold NaN or Inf"),
    (dict(question="Q?", audio=np.zeros(1600, np.complex64)), r"audio array: expected float or integer PCM"),
    (dict(question="Q?", audio=np.zeros(1600, np.float32), sample_rate=-5), r"sample_rate: expected a positive"),
    (dict(question="Q?", max_new_tokens=-1), r"max_new_tokens: expected an integer >= 1, got -1"),
    (dict(question="Q?", max_new_tokens=2.5), r"max_new_tokens: expected an integer >= 1, got 2.5"),
    (dict(question="Q?", top_k=-3), r"top_k: expected an integer >= 0"),
    (dict(question="Q?", max_tokens=5), r"max_tokens: unknown generation option"),
    (dict(question="Q?", stop="</answer>"), r"stop: expected a list of non-empty strings"),
    (dict(question=["A?", "B?"], image="a.png"), r"image: with 2 questions, expected a list of 2 entries"),
])
def test_every_qa_argument_is_checked_with_a_named_one_line_error(qa, call, message):
    from PIL import Image

    if call.get("image") == "__empty__":
        call = {**call, "image": Image.new("RGB", (0, 0))}
    with pytest.raises(ValueError, match=message) as error:
        qa(**call)
    assert "\n" not in str(error.value)
    if isinstance(call["question"], str):  # the streamed form checks the same
        with pytest.raises(ValueError, match=message):
            list(qa.stream(**call))


def test_a_nan_wav_file_is_refused_by_qa(qa, tmp_path):
    import soundfile

    soundfile.write(tmp_path / "nan.wav", np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"question\[0\]: audio: .*nan.wav: samples hold NaN or Inf"):
        qa("How many beeps?", audio=str(tmp_path / "nan.wav"))


def test_importing_inference_and_the_checkpoint_reader_does_not_import_lightning():
    import subprocess
    import sys

    code = ("import sys, mmr1.inference, mmr1.checkpoint, mmr1.cli; "
            "assert 'lightning' not in sys.modules and 'lightning.pytorch' not in sys.modules, 'lightning'")
    subprocess.run([sys.executable, "-c", code], check=True)
