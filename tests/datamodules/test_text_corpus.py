import json
import random

import lightning as L
import pytest
import torch

from mmr1.config import CoreConfig
from mmr1.core import ReasoningCore
from mmr1.datamodules.prompt import format_prompt, format_response
from mmr1.datamodules.text import (PackedLoader, PackedTextDataset, TextDataModule, collate_blocks,
                                   caption_templates, encode_document, read_documents, read_scored_documents,
                                   render_record_captions)
from mmr1.datamodules.tokenizer import Tokenizer

WORDS = "the quick brown fox jumps over a lazy dog while seven cats sleep in warm sun".split()


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"doc {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(_docs(200), vocab_size=300)


@pytest.fixture
def corpus(tmp_path) -> tuple[list, list[str]]:
    """Three files (blank-line text, text JSONL, question/answer JSONL) and their documents in order."""
    docs = _docs(60)
    (tmp_path / "a.txt").write_text("\n\n".join(d.replace(": ", ":\n", 1) for d in docs[:30]) + "\n")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[30:50]))
    qa = [{"question": d, "answer": str(i), "reasoning": "because"} for i, d in enumerate(docs[50:])]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in qa) + "\n")
    expected = ([d.replace(": ", ":\n", 1) for d in docs[:30]] + docs[30:50]
                + [format_prompt(r["question"]) + format_response("because", r["answer"]) for r in qa])
    return [tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.jsonl"], expected


def test_read_documents_splits_files_blocks_and_records(corpus, tmp_path):
    files, expected = corpus
    assert list(read_documents(files, "blank_line")) == expected
    assert list(read_documents(files[:1], "file")) == [files[0].read_text()]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: record: expected a 'text' field"):
        list(read_documents([tmp_path / "bad.jsonl"]))


def test_packing_keeps_every_token_restarts_document_ids_and_pads_only_the_end(corpus, tokenizer):
    files, expected = corpus
    dataset = PackedTextDataset(files, tokenizer, block_size=32, doc_split="blank_line")
    blocks = list(dataset.blocks(shard=0, num_shards=1))
    stream = [t for doc in expected for t in encode_document(tokenizer, doc)]
    assert stream.count(tokenizer.eos_id) == len(expected) and stream[-1] == tokenizer.eos_id
    real = torch.cat([b["input_ids"][b["attention_mask"]] for b in blocks]).tolist()
    assert real == stream
    assert len(blocks) == -(-len(stream) // 32) and all(b["input_ids"].shape == (32,) for b in blocks)
    assert all(b["attention_mask"].all() for b in blocks[:-1])
    last = blocks[-1]["attention_mask"]
    assert not last.all() and last.tolist() == sorted(last.tolist(), reverse=True)  # padding at the end only
    assert (blocks[-1]["labels"][~last] == -100).all() and (blocks[-1]["input_ids"][~last] == tokenizer.pad_id).all()
    for b in blocks:
        ids, tokens = b["document_ids"], b["input_ids"]
        assert ids[0] == 0 and ((ids[1:] - ids[:-1]) >= 0).all() and ((ids[1:] - ids[:-1]) <= 1).all()
        new_document = (tokens[:-1] == tokenizer.eos_id) & b["attention_mask"][1:]
        assert torch.equal(ids[1:] != ids[:-1], new_document | ~b["attention_mask"][1:] & b["attention_mask"][:-1])
        assert torch.equal(b["labels"][b["attention_mask"]], tokens[b["attention_mask"]])


def test_core_reads_a_packed_batch_as_separate_documents(corpus, tokenizer):
    files, _ = corpus
    blocks = list(PackedTextDataset(files, tokenizer, 32, "blank_line").blocks(0, 1))[-2:]  # the last one is padded
    batch = {k: v for k, v in collate_blocks(blocks).items() if torch.is_tensor(v)}
    torch.manual_seed(0)
    core = ReasoningCore(CoreConfig(vocab_size=len(tokenizer), n_layers=1, d_model=32, n_heads=4, n_kv_heads=2,
                                    intermediate_size=64, max_seq_len=64)).eval()
    with torch.no_grad():
        logits = core(batch["input_ids"], batch["attention_mask"], document_ids=batch["document_ids"]).logits
        for row in range(2):
            for document in batch["document_ids"][row][batch["attention_mask"][row]].unique():
                span = (batch["document_ids"][row] == document) & batch["attention_mask"][row]  # [T]
                alone = core(batch["input_ids"][row][span][None]).logits[0]
                torch.testing.assert_close(logits[row][span], alone, atol=1e-5, rtol=1e-5)


def _documents_seen(batches: list[dict], tokenizer: Tokenizer) -> dict[int, list[int]]:
    """Shard -> indices of the documents it streamed, decoded from its real tokens."""
    tokens: dict[int, list[int]] = {}
    for batch in batches:
        tokens.setdefault(batch["stream_state"][1], []).extend(batch["input_ids"][batch["attention_mask"]].tolist())
    seen = {}
    for shard, ids in tokens.items():
        text = tokenizer.decode(ids)
        seen[shard] = [int(doc.split(":")[0].removeprefix("doc ")) for doc in text.split("</s>") if doc]
    return seen


def test_two_ranks_times_two_workers_see_each_document_exactly_once(tmp_path, tokenizer):
    docs = _docs(50, seed=3)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    seen = {}
    for rank in range(2):
        dataset = PackedTextDataset([tmp_path / "c.jsonl"], tokenizer, 16, rank=rank, world_size=2)
        seen |= _documents_seen(list(PackedLoader(dataset, batch_size=3, num_workers=2)), tokenizer)
    assert sorted(seen) == [0, 1, 2, 3]
    for shard, indices in seen.items():
        assert indices == list(range(shard, 50, 4))  # index % (ranks × workers) == shard, in order


def _run(files, tokenizer, num_workers: int, consumed: int | None = None, state: dict | None = None,
         prefetch: int = 0) -> tuple[list[dict], dict | None]:
    """Batches of a (possibly resumed) epoch; with `consumed`, stop there and return the state."""
    loader = PackedLoader(PackedTextDataset(files, tokenizer, 24, "blank_line", seed=5), 2, num_workers)
    if state is not None:
        loader.load_state_dict(state)
    batches = []
    for batch in loader:
        if consumed is not None and len(batches) == consumed + prefetch:
            break
        batches.append(batch)
    for batch in batches[:consumed]:
        loader.consumed(batch["stream_state"])
    return batches[:consumed], loader.state_dict()


@pytest.mark.parametrize("num_workers, k", [(0, 5), (2, 3)])
def test_resume_mid_epoch_gives_the_remaining_batches(corpus, tokenizer, tmp_path, num_workers, k):
    files, _ = corpus
    full, _ = _run(files, tokenizer, num_workers)
    _, state = _run(files, tokenizer, num_workers, consumed=k, prefetch=2)  # prefetched, never used: not skipped
    torch.save(state, tmp_path / "state.pt")
    rest, _ = _run(files, tokenizer, num_workers, state=torch.load(tmp_path / "state.pt", weights_only=True))
    assert len(rest) == len(full) - k
    for a, b in zip(rest, full[k:]):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["document_ids"], b["document_ids"])
    with pytest.raises(ValueError, match="same ranks × workers"):
        PackedLoader(PackedTextDataset(files, tokenizer, 24, world_size=2), 2, num_workers).load_state_dict(state)


class _Recorder(L.LightningModule):
    """Records the first token of every training batch it sees."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"][:, 0].tolist())
        return (self.weight * batch["attention_mask"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(files, tokenizer_folder, max_steps: int, ckpt_path=None, callbacks=()) -> list[list[int]]:
    module = _Recorder()
    datamodule = TextDataModule([str(f) for f in files], tokenizer=str(tokenizer_folder), block_size=16,
                                batch_size=2, doc_split="blank_line")
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=bool(callbacks), callbacks=list(callbacks))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module.seen


def test_lightning_resumes_mid_epoch_from_a_checkpoint(corpus, tokenizer, tmp_path):
    files, _ = corpus
    tokenizer.save(tmp_path / "tok")
    full = _fit(files, tmp_path / "tok", max_steps=7)
    assert len(full) == 7 and len(set(map(tuple, full))) == 7
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    assert _fit(files, tmp_path / "tok", max_steps=4, callbacks=[checkpoint]) == full[:4]
    ckpt = next((tmp_path / "ckpt").glob("*.ckpt"))
    assert torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 4
    assert _fit(files, tmp_path / "tok", max_steps=7, ckpt_path=ckpt) == full[4:]


def test_datamodule_trains_a_tokenizer_and_collates(corpus):
    files, _ = corpus
    dm = TextDataModule([str(f) for f in files], val_files=[str(files[1])], vocab_size=300, block_size=32,
                        batch_size=4, doc_split="blank_line")
    dm.setup("fit")
    assert len(dm.tokenizer) <= 300
    batch = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert {k: tuple(v.shape) for k, v in batch.items() if torch.is_tensor(v)} == {
        "input_ids": (4, 32), "labels": (4, 32), "document_ids": (4, 32), "attention_mask": (4, 32)}
    assert batch["padding_fraction"] == 0.0 and "stream_state" not in batch
    assert dm.train_dataloader().batches == 1 and len(list(dm.val_dataloader())) >= 1


CAPTIONED = [{"question": f"what is {a} plus {b}?", "image_caption": f"the picture shows {a}.",
              "audio_caption": f"the sound says {b}.",
              "reasoning": f"the picture shows {a}. the sound says {b}. {a} + {b} = {a + b}.", "answer": str(a + b)}
             for a, b in [(3, 4), (7, 1), (2, 9), (5, 5), (1, 12)]]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_caption_templates_are_the_shared_words_and_only_the_varying_words_are_unscored(tmp_path):
    templates = caption_templates([_write(tmp_path / "c.jsonl", CAPTIONED)])
    # "shows 1." / "shows 12." share "1" too; the template stops at the word boundary
    assert templates == {"image_caption": ("the picture shows ", "."), "audio_caption": ("the sound says ", ".")}
    record = CAPTIONED[-1]
    document = render_record_captions(record, templates)
    assert [document.text[start:end] for start, end in document.unscored] == ["1", "12"]
    prompt_end = document.text.index(record["question"]) + len(record["question"])
    assert all(start > prompt_end for start, _ in document.unscored)  # the response's, not the question's
    assert render_record_captions({"question": "q", "answer": "a"}, templates).unscored == ()  # no captions
    same = caption_templates([_write(tmp_path / "same.jsonl", [CAPTIONED[0]] * 2)])  # nothing varies
    assert render_record_captions(CAPTIONED[0], same).unscored == ()
    with pytest.raises(ValueError, match=r"audio_caption: 'the sound says 8.' is not in the record's reasoning"):
        render_record_captions({**record, "audio_caption": "the sound says 8."}, templates)
    with pytest.raises(ValueError, match=r"bad.jsonl:2: image_caption: expected a non-empty string"):
        caption_templates([_write(tmp_path / "bad.jsonl", [record, {**record, "image_caption": ""}])])


def test_unscored_captions_keep_the_tokens_and_drop_only_the_media_words_from_the_loss(tmp_path):
    path = _write(tmp_path / "captioned.jsonl", CAPTIONED)
    tokenizer = Tokenizer.train([r["question"] + " " + r["reasoning"] for r in CAPTIONED], vocab_size=300)
    plain = list(PackedTextDataset([path], tokenizer, 40).blocks(0, 1))
    unscored = list(PackedTextDataset([path], tokenizer, 40, unscored_captions=True).blocks(0, 1))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(plain, unscored, strict=True))
    assert all((b["labels"] != -100).sum() == b["attention_mask"].sum() for b in plain)
    ids = torch.cat([b["input_ids"] for b in unscored])  # [N]
    real = torch.cat([b["attention_mask"] for b in unscored])  # [N]
    dropped = real & torch.cat([b["labels"] == -100 for b in unscored])  # [N]
    media_digits = [str(r[key]) for r in CAPTIONED for key in ("image_caption", "audio_caption")]
    runs: list[list[int]] = []  # the dropped tokens, grouped into contiguous runs
    for i in dropped.nonzero().flatten().tolist():
        if i > 0 and dropped[i - 1]:
            runs[-1].append(ids[i].item())
        else:
            runs.append([ids[i].item()])
    assert [tokenizer.decode(run).strip() for run in runs] == [c.split()[-1].rstrip(".") for c in media_digits]
    kept = tokenizer.decode(ids[real & ~dropped].tolist())
    assert all(f"= {r['answer']}." in kept and r["question"] in kept for r in CAPTIONED)
    assert kept.count("the picture shows") == len(CAPTIONED)  # the template is still learned
    dm = TextDataModule([str(path)], tokenizer=None, vocab_size=300, block_size=40, batch_size=2,
                        unscored_captions=True)
    dm.setup("fit")
    assert dm.datasets["train"].templates == caption_templates([path])
    bad = _write(tmp_path / "bad.jsonl", [CAPTIONED[0], {**CAPTIONED[1], "image_caption": "the picture shows 9."}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: image_caption: 'the picture shows 9.' is not in"):
        list(read_scored_documents([bad], templates=caption_templates([bad])))
    assert len(list(read_documents([bad]))) == 2  # without the option, captions are not read
