"""Data for mmr1: processors, tokenizer, chat format, manifests, synthetic data, text corpora, datamodules.

Names are imported lazily, so `from mmr1.datamodules.prompt import format_prompt` does not
pull in Lightning or torchvision.
"""

import importlib

_EXPORTS = {
    "Tokenizer": "tokenizer",
    "format_prompt": "prompt", "format_response": "prompt", "parse_response": "prompt",
    "ImageProcessor": "processors", "AudioProcessor": "processors", "ImageAugment": "processors",
    "AudioAugment": "processors",
    "Synth": "synth",
    "RecordProcessor": "records", "ManifestDataset": "manifest", "SynthDataset": "synth_dataset",
    "Collator": "collate",
    "PairedDataModule": "datamodules", "MaskedDataModule": "datamodules", "SFTDataModule": "datamodules",
    "RLPromptDataModule": "datamodules", "PreferenceDataModule": "datamodules",
    "BadRecordReport": "callbacks",
    "PackedTextDataset": "text", "PackedLoader": "text", "TextDataModule": "text", "read_documents": "text",
    "read_gsm8k": "gsm8k", "gsm8k_texts": "gsm8k",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmr1.datamodules' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mmr1.datamodules.{_EXPORTS[name]}"), name)
