"""PrefixWordsModule: each medium's prefix, as distributions over the core's vocabulary, learns its captions' words."""

import lightning as L
import pytest
import torch

from mmr1.datamodules.datamodules import PairedDataModule
from mmr1.objectives import PrefixWordsModule

VOCAB_PREFIX = {"fusion": {"vocab_prefix": True}}


def batch_with_both_media(module, **data):
    dm = PairedDataModule(config=module.config, batch_size=8, synth_train_size=32, augment=False, **data)
    dm.setup("fit")
    return next(b for b in dm.train_dataloader() if "audio_values" in b and b["image_mask"].sum() >= 4)


def test_the_loss_is_each_mediums_mean_distribution_against_its_captions_bag_of_tokens():
    torch.manual_seed(0)
    module = PrefixWordsModule(overrides=VOCAB_PREFIX).eval()
    batch = batch_with_both_media(module)
    with torch.no_grad():
        terms = module.losses(batch)
        media = {k: batch[k] for k in ("pixel_values", "image_mask", "audio_values", "audio_lengths")}
        probs, mask, spans = module.model.prefix_vocabulary(**media)  # [B, P, V]
    assert set(spans) == {"image", "audio"}  # the captions (text_ids) never reach the prefix
    want = {}
    for medium, (start, end) in spans.items():
        ids, id_mask = batch[f"{medium}_caption_ids"], batch[f"{medium}_caption_mask"]
        per_row = []
        for row in range(len(ids)):
            real = mask[row, start:end]
            if not real.any() or not id_mask[row].any():
                continue  # this record lacks the medium or a caption for it
            mean = probs[row, start:end][real].mean(0)  # [V]
            words = sorted(set(ids[row][id_mask[row]].tolist()))
            per_row.append(-mean[words].log().mean())
        want[medium] = torch.stack(per_row).mean()
        torch.testing.assert_close(terms[f"{medium}_words"], want[medium], rtol=1e-4, atol=1e-5)
        assert 0.0 <= float(terms[f"{medium}_r1"]) <= 1.0
    torch.testing.assert_close(terms["loss"], sum(want.values()) / len(want), rtol=1e-4, atol=1e-5)


def test_training_makes_each_prefix_name_its_caption_and_leaves_the_core_alone():
    """A few steps on one batch: the loss falls and each medium's prefix picks its own
    caption out of the batch's; the core, never run, is unchanged under a Trainer."""
    torch.manual_seed(0)
    module = PrefixWordsModule(overrides=VOCAB_PREFIX, freeze=["core"], lr=3e-3, warmup_steps=0)
    batch = batch_with_both_media(module)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    with torch.no_grad():
        first = module.losses(batch)
    for _ in range(40):
        loss = module.losses(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = module.losses(batch)
    assert float(last["loss"]) < 0.5 * float(first["loss"])
    assert float(last["audio_r1"]) == 1.0 and float(last["image_r1"]) > float(first["image_r1"])

    core = {k: v.clone() for k, v in module.model.core.state_dict().items()}
    dm = PairedDataModule(config=module.config, batch_size=4, synth_train_size=8, synth_val_size=4)
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(module, dm)
    assert all(torch.equal(core[k], v) for k, v in module.model.core.state_dict().items())


def test_a_linear_projector_or_a_batch_without_captions_fails_with_the_reason():
    with pytest.raises(ValueError, match="fusion.vocab_prefix"):
        PrefixWordsModule()
    module = PrefixWordsModule(overrides=VOCAB_PREFIX)
    batch = batch_with_both_media(module)
    uncaptioned = {k: v for k, v in batch.items() if "_caption_" not in k}
    with pytest.raises(ValueError, match="no medium has its own caption"):
        module.losses(uncaptioned)
