"""LightningDataModules, one per objective family, over manifests or the synthetic generator.

With no manifest at all, every split comes from the built-in generator (disjoint splits,
deterministic per seed); with some manifests, only those splits exist. Datasets are
map-style, so Lightning injects its DistributedSampler under DDP, and items depend only
on their index, so `seed_everything(workers=True)` makes runs repeatable.
"""

from __future__ import annotations

import functools
from typing import Optional

import lightning as L
from torch.utils.data import DataLoader, Dataset

from mmr1.config import Config
from mmr1.datamodules.collate import Collator
from mmr1.datamodules.manifest import ManifestDataset
from mmr1.datamodules.processors import AudioAugment, ImageAugment
from mmr1.datamodules.records import RecordProcessor
from mmr1.datamodules.skips import SANITY, STAGES, SkipLedger
from mmr1.datamodules.synth import Synth, image_size_for
from mmr1.datamodules.synth_dataset import SynthDataset
from mmr1.datamodules.text import caption_templates

SYNTH_VAL_SIZE = 200  # built-in val records a data module draws unless told (`synth_val_size`)


def _settings(kind: type, value, name: str):
    """A settings dataclass from itself, a mapping of its fields (YAML; LightningCLI's hparams keep it so) or None."""
    if value is None or isinstance(value, kind):
        return value
    if isinstance(value, dict):
        try:
            return kind(**value)
        except TypeError as e:
            raise ValueError(f"{name}: {e}") from e
    raise ValueError(f"{name}: expected a mapping of {kind.__name__} fields, got {type(value).__name__}")


class MultimodalDataModule(L.LightningDataModule):
    """Shared machinery; subclasses only pick the objective."""

    objective = ""

    def __init__(
        self,
        train_manifest: Optional[str] = None,
        val_manifest: Optional[str] = None,
        test_manifest: Optional[str] = None,
        preset: str = "tiny",
        config: Optional[Config] = None,
        tokenizer: Optional[str] = None,
        text_tokenizer: Optional[str] = None,
        batch_size: int = 16,
        eval_batch_size: Optional[int] = None,
        num_workers: int = 0,
        seed: int = 0,
        skip_bad_records: bool = False,
        synth_train_size: int = 2000,
        synth_val_size: int = SYNTH_VAL_SIZE,
        synth_test_size: int = 200,
        difficulty: Optional[int] = None,
        max_length: Optional[int] = None,
        augment: bool = True,
        image_augment: Optional[ImageAugment | dict] = None,
        audio_augment: Optional[AudioAugment | dict] = None,
    ):
        """
        Args:
            train_manifest / val_manifest / test_manifest: JSONL manifests; all None = synthetic data.
            preset: model preset whose vision/audio/text settings shape the inputs (ignored if `config`).
            config: the model's Config (link it from the model in LightningCLI).
            tokenizer: a tokenizer folder; None = `Tokenizer.default()` (the tiny preset's vocabulary).
            text_tokenizer: folder for the text encoder's ids; None = config.text.pretrained, else `tokenizer`.
            batch_size / num_workers: per process (per GPU under DDP).
            eval_batch_size: of the val, test and predict loaders (e.g. larger for RL's greedy validation);
                None = batch_size.
            seed: seed of the synthetic splits.
            skip_bad_records: leave bad records out of their batch (never replaced) and report each once,
                with totals per epoch and per run (`BadRecordReport`), instead of raising.
            synth_*_size / difficulty: size and difficulty (1..3, None = mixed 1-3; 0 = one shape or beep, named)
                of the synthetic splits.
            max_length: longest core sequence in tokens (a longer record is an error); None = what the
                core takes beside the largest prefix (`core_text_limit`).
            augment: augmentation on the training split (False turns every kind off).
            image_augment: its image settings; None = `ImageAugment()` (light colour jitter only).
            audio_augment: its waveform settings; None = `AudioAugment()` (none; SpecAugment is the encoder's).
        """
        super().__init__()
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size: expected None or >= 1, got {eval_batch_size}")
        self.save_hyperparameters(ignore=["config"])  # under LightningCLI, as written in the config
        self.image_augment = _settings(ImageAugment, image_augment, "image_augment")
        self.audio_augment = _settings(AudioAugment, audio_augment, "audio_augment")
        self.config = config or Config.from_name(preset)
        self.manifests = {"train": train_manifest, "val": val_manifest, "test": test_manifest}
        self.synth_sizes = {"train": synth_train_size, "val": synth_val_size, "test": synth_test_size}
        self.datasets: dict[str, Dataset] = {}
        self.skips = SkipLedger()
        self._tokenizer = tokenizer
        self._text_tokenizer = text_tokenizer

    # ---- building ---------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, ("train", "val", "test")):
            if split not in self.datasets:
                dataset = self._dataset(split)
                if dataset is not None:
                    self.datasets[split] = dataset

    def _dataset(self, split: str) -> Optional[Dataset]:
        processors = RecordProcessor.from_config(self.config, split == "train" and self.hparams.augment,
                                                 self.image_augment, self.audio_augment)
        if not any(self.manifests.values()):
            synth = Synth(self.hparams.seed, split, self.hparams.difficulty, image_size_for(self.config))
            return SynthDataset(synth, self.synth_sizes[split], processors)
        if self.manifests[split] is None:
            return None
        dataset = ManifestDataset(self.manifests[split], processors, self.objective, self.hparams.skip_bad_records,
                                  encode=self.collator.encode)
        for line, reason in dataset.skipped:
            self.skips.add(STAGES[split], f"{dataset.path}:{line}", reason, every_epoch=True)
        if not len(dataset):
            raise ValueError(f"{dataset.path}: no usable records ({len(dataset.skipped)} skipped)")
        return dataset

    @functools.cached_property
    def collator(self) -> Collator:
        """The objective's collator with the model's tokenizer(s) and length limits, built once."""
        return Collator.for_model(self.config, self.objective, self._tokenizer, self._text_tokenizer,
                                  self.hparams.max_length)

    # ---- loading ------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool = False) -> DataLoader | list:
        if split not in self.datasets:
            return []
        workers = self.hparams.num_workers
        size = self.hparams.batch_size if split == "train" else self.hparams.eval_batch_size or self.hparams.batch_size
        return DataLoader(self.datasets[split], batch_size=size, shuffle=shuffle,
                          num_workers=workers, persistent_workers=workers > 0, collate_fn=self.collator)

    def train_dataloader(self) -> DataLoader | list:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        return self._loader("test")

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Takes the skip reports out of the batch (the model never sees them) into `self.skips`."""
        running = self.trainer.state.stage if self.trainer is not None else None
        stage = running.value if running is not None else None
        for where, reason in batch.pop("skipped", ()):
            self.skips.add(SANITY.get(stage, stage), where, reason)
        return batch


class PairedDataModule(MultimodalDataModule):
    """Alignment: media + caption (text_ids from `caption` or `text`; each medium's own caption, for the text
    encoder and in the core's vocabulary: see `Collator`)."""

    objective = "paired"

    def __init__(self, *args, caption_templates: bool = False, **kwargs):
        """
        Args:
            caption_templates: the core-vocabulary captions ({m}_caption_ids, which `PrefixWordsModule` reads)
                keep only their varying words: "7" of "The picture shows 7.", less the prefix and suffix all of
                that key's captions in the train manifest share (`caption_templates`).
            *args / **kwargs: those of MultimodalDataModule.
        """
        super().__init__(*args, **kwargs)  # its save_hyperparameters records caption_templates too

    @functools.cached_property
    def collator(self) -> Collator:
        collator = super().collator
        if self.hparams.caption_templates:
            if self.manifests["train"] is None:
                raise ValueError("caption_templates: needs a train_manifest to read the captions' templates from")
            collator.caption_templates = caption_templates([self.manifests["train"]])
        return collator


class MaskedDataModule(MultimodalDataModule):
    """Masked modelling: any records; text_ids arrive masked with text_labels."""

    objective = "masked"


class SFTDataModule(MultimodalDataModule):
    """Supervised fine-tuning: prompt + <think>reasoning</think><answer>answer</answer>."""

    objective = "sft"


class RLPromptDataModule(MultimodalDataModule):
    """GRPO/PPO prompts: left-padded prompts and reference answers."""

    objective = "rl"


class PreferenceDataModule(MultimodalDataModule):
    """DPO: prompt + chosen and prompt + rejected responses."""

    objective = "preference"
