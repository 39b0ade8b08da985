import json

import pytest

from mmr1.cli import main as mmr1_main


def main(argv: list[str]) -> int:
    """`mmr1 data ARGV` through the command table (one-line errors, exit status)."""
    return mmr1_main(["data", *argv])
from mmr1.datamodules.gsm8k import gsm8k_texts, parse_solution
from mmr1.datamodules.text import TextDataModule


def test_parse_solution_strips_annotations_and_keeps_the_answer_as_written():
    reasoning, answer = parse_solution("He pays 4*$250 = $<<4*250=1000>>1000.\nThen -<<2-5=-3>>3 more.\n#### $1,000.50")
    assert reasoning == "He pays 4*$250 = $1000.\nThen -3 more." and answer == "$1,000.50"
    with pytest.raises(ValueError, match="expected one '#### <final answer>' line, found 0"):
        parse_solution("no final line")
    with pytest.raises(ValueError, match="nothing after"):
        parse_solution("steps\n#### ")


def test_convert_command_names_the_bad_line(tmp_path, capsys):
    source = tmp_path / "train.jsonl"
    source.write_text(json.dumps({"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}) + "\n"
                      + json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    assert main(["convert", "gsm8k", "--in", str(source), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert f"{source}:2: answer: expected one '####" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_convert_keeps_the_shortest_problems_in_file_order(tmp_path, capsys):
    source = tmp_path / "train.jsonl"
    problems = [("A long question about apples and pears?", "3 + 4 = 7 and 7 * 2 = 14", "14"), ("1+1?", "1+1=2", "2"),
                ("What is 2+3?", "2+3=5", "5"), ("9-4?", "9-4=5", "5")]
    source.write_text("".join(json.dumps({"question": q, "answer": f"{s}\n#### {a}"}) + "\n" for q, s, a in problems))
    out = tmp_path / "short.jsonl"
    assert main(["convert", "gsm8k", "--in", str(source), "--out", str(out), "--shortest", "2"]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["gsm8k-train-2", "gsm8k-train-4"]
    assert "wrote 2 gsm8k records" in capsys.readouterr().out
    assert main(["convert", "gsm8k", "--in", str(source), "--out", str(out), "--shortest", "0"]) == 2
    assert "shortest: expected n >= 1, got 0" in capsys.readouterr().err


@pytest.fixture
def gsm8k(shared_data, tmp_path) -> dict:
    """The real GSM8K files converted with `mmr1 data convert gsm8k`: split -> (source, manifest, records)."""
    out = tmp_path
    converted = {}
    for split in ("train", "test"):
        source = shared_data / "gsm8k" / f"{split}.jsonl"
        assert main(["convert", "gsm8k", "--in", str(source), "--out", str(out / f"{split}.jsonl")]) == 0
        records = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        converted[split] = (source, out / f"{split}.jsonl", records)
    return converted


@pytest.mark.needs_data
def test_real_gsm8k_converts_with_known_records(gsm8k):
    train, test = gsm8k["train"][2], gsm8k["test"][2]
    assert (len(train), len(test)) == (7473, 1319)
    assert train[0] == {
        "id": "gsm8k-train-1",
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                    "How many clips did Natalia sell altogether in April and May?",
        "reasoning": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.",
        "answer": "72"}
    assert train[1]["reasoning"].endswith("she earned 0.2 x 50 = $10.") and train[1]["answer"] == "10"
    assert test[-1]["id"] == "gsm8k-test-1319"
    records = train + test
    assert not any("<<" in r["reasoning"] or "####" in r["reasoning"] for r in records)
    answers = [r["answer"] for r in records]
    assert (test[146]["id"], test[146]["answer"], test[489]["answer"]) == ("gsm8k-test-147", "2,125", "-10")
    assert sum("," in a for a in answers) > 50
    for answer in answers:
        float(answer.replace(",", "").replace("$", ""))


@pytest.mark.needs_data
@pytest.mark.parametrize("corpus", ["plain text", "chat manifest"])
def test_text_datamodule_packs_gsm8k_with_almost_no_padding(gsm8k, tmp_path, corpus):
    source, manifest, records = gsm8k["test"]
    texts = list(gsm8k_texts(source))
    assert texts[0].startswith(records[0]["question"]) and texts[0].endswith(f"The answer is {records[0]['answer']}.")
    if corpus == "plain text":
        manifest = tmp_path / "gsm8k-text.jsonl"
        manifest.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    dm = TextDataModule([str(manifest)], vocab_size=1024, block_size=128, batch_size=16)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert all(b["input_ids"].shape == (16, 128) and b["padding_fraction"] == 0.0 for b in batches[:-1])
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    assert sum(int((b["input_ids"] == dm.tokenizer.eos_id).sum()) for b in batches) == len(records)
    assert 1 - real / sum(b["input_ids"].numel() for b in batches) < 0.001
