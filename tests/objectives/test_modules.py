"""Each objective trains a few steps through a real Trainer on the synthetic data."""

import lightning as L
import pytest
import torch
from PIL import Image

from mmr1.datamodules.collate import Collator
from mmr1.datamodules.datamodules import MaskedDataModule, PairedDataModule, SFTDataModule
from mmr1.datamodules.records import RecordProcessor
from mmr1.objectives import ContrastiveModule, MaskedModule, SFTModule
from mmr1.optim import param_groups, warmup_cosine


def fit(module, data_cls, steps=3, **data):
    dm = data_cls(config=module.config, batch_size=4, synth_train_size=8, synth_val_size=4, **data)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, dm)
    return trainer


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.model.named_parameters()}


def changed(before, module, prefix):
    return any(not torch.equal(before[k], v) for k, v in module.model.named_parameters() if k.startswith(prefix))


@pytest.mark.parametrize("module_cls, data_cls, parts", [
    (ContrastiveModule, PairedDataModule, ("vision.", "text_encoder.", "audio.")),
    (MaskedModule, MaskedDataModule, ("vision.", "text_encoder.", "audio.")),
    (SFTModule, SFTDataModule, ("core.", "fusion.", "vision.")),
])
def test_module_trains_a_few_steps(module_cls, data_cls, parts):
    torch.manual_seed(0)
    module = module_cls()
    before = snapshot(module)
    trainer = fit(module, data_cls)
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    for part in parts:
        assert changed(before, module, part), part


def test_masked_module_logs_each_term():
    torch.manual_seed(0)
    trainer = fit(MaskedModule(mim_weight=0.5), MaskedDataModule, steps=1)
    assert {"train/mlm", "train/mim", "train/mam"} <= set(trainer.callback_metrics)


def test_mim_on_the_conv_stem_predicts_each_token_s_patch():
    """The conv stem's ViT has patch_size 1 inside timm; MIM must still regress the 8×8 patch each of its 16
    tokens sees (it once cut 1,024 one-pixel patches and failed with a shape error)."""
    torch.manual_seed(0)
    module = MaskedModule(overrides={"vision": {"stem": "conv"}}, mlm_weight=0.0, mam_weight=0.0)
    assert module.model.vision.patch_size == 8 and module.mim_head.out_features == 8 * 8 * 3
    pixels = torch.rand(2, 3, 32, 32)
    loss = module.mim(pixels, torch.ones(2, dtype=torch.bool))
    assert loss.isfinite() and loss > 0
    loss.backward()
    assert module.model.vision.model.patch_embed.backbone[0].conv.weight.grad.abs().sum() > 0


def test_contrastive_validation_logs_recall_both_ways():
    torch.manual_seed(0)
    module = ContrastiveModule()
    dm = PairedDataModule(config=module.config, batch_size=8, synth_val_size=8)
    metrics = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False).validate(module, dm, verbose=False)[0]
    recalls = [k for k in metrics if "/r1_" in k]
    assert "val/loss" in metrics and recalls
    for key in recalls:
        first, second = key.split("r1_")[1].split("2")
        assert f"val/r1_{second}2{first}" in metrics


def test_sft_reduces_training_loss():
    torch.manual_seed(0)
    module = SFTModule(lr=3e-3, warmup_steps=3, overrides={"core": {"n_layers": 2}})
    dm = SFTDataModule(config=module.config, batch_size=4, synth_train_size=4, augment=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    first = module.losses(batch)["loss"].item()
    L.Trainer(accelerator="cpu", max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(module, dm)
    module.eval()
    with torch.no_grad():
        last = module.losses(batch)["loss"].item()
    assert last < 0.7 * first, (first, last)


def test_freezing_leaves_frozen_weights_unchanged():
    torch.manual_seed(0)
    module = SFTModule(freeze=["vision", "core"])
    before = snapshot(module)
    fit(module, SFTDataModule, steps=2)
    assert not changed(before, module, "vision.") and not changed(before, module, "core.")
    assert changed(before, module, "fusion.")


@pytest.mark.parametrize("freeze", [["audio"], []])
def test_a_frozen_encoder_keeps_its_running_statistics(freeze):
    """requires_grad_(False) alone leaves BatchNorm updating its running statistics in training mode: a frozen
    audio encoder then computed another function after SFT than before (seen on the digits task)."""
    torch.manual_seed(0)
    module = SFTModule(freeze=freeze)
    norms = [m for m in module.model.audio.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms  # the Conformer's convolution module
    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in norms]
    fit(module, SFTDataModule, steps=2)
    kept = [torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var) and int(m.num_batches_tracked) == n
            for m, (mean, var, n) in zip(norms, before)]
    assert all(kept) if freeze else not any(kept)


def test_unknown_freeze_part_is_refused():
    with pytest.raises(ValueError, match="freeze: unknown part 'decoder'"):
        SFTModule(freeze=["decoder"])


def test_nan_loss_names_the_step_and_term():
    module = SFTModule()
    losses = module.losses
    module.losses = lambda batch: {**losses(batch), "loss": torch.tensor(float("nan"), requires_grad=True)} \
        if module.global_step == 1 else losses(batch)
    with pytest.raises(FloatingPointError, match="step 1: loss term 'loss'"):
        fit(module, SFTDataModule, steps=3)


def test_moe_routing_bias_moves_after_each_step():
    torch.manual_seed(0)
    module = SFTModule(overrides={"core": {"n_routed_experts": 4, "n_experts_per_token": 1, "bias_update_rate": 0.1}})
    trainer = fit(module, SFTDataModule, steps=1)
    layers = module.model.core.moe_layers()
    assert layers and all(m.routing_bias.abs().sum() > 0 for m in layers)
    assert "moe/max_load_0" in trainer.callback_metrics


def test_init_from_loads_a_folder_and_rejects_bad_ones(tmp_path):
    source = SFTModule(overrides={"core": {"n_layers": 2}})
    source.model.save_pretrained(tmp_path / "ckpt")
    module = SFTModule(init_from=str(tmp_path / "ckpt"))
    torch.testing.assert_close(module.model.core.embed_tokens.weight, source.model.core.embed_tokens.weight)
    assert module.model.training
    with pytest.raises(ValueError, match="init_from: cannot load"):
        SFTModule(init_from=str(tmp_path / "missing"))


def test_no_weight_decay_on_norms_biases_embeddings():
    module = SFTModule()
    decay, no_decay = param_groups(module, 0.1)
    names = {id(p): n for n, p in module.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "model.core.embed_tokens.weight" not in decayed
    assert not any(n.endswith((".bias", "norm.weight", "pos_embed", "cls_token")) for n in decayed)
    assert "model.core.layers.0.attn.q_proj.weight" in decayed or any("q_proj" in n for n in decayed)
    assert no_decay["weight_decay"] == 0.0


def test_lr_scale_sets_a_parts_learning_rate_and_refuses_bad_parts():
    module = SFTModule(lr=1e-3, lr_scale={"vision": 0.1, "audio": 0.5})
    head = module.model.vision.model  # its cls_token and pos_embed replaced after construction, as FSDP2 shards
    replaced = {name: torch.nn.Parameter(w.detach().clone()) for name, w in head.named_parameters(recurse=False)}
    for name, w in replaced.items():
        setattr(head, name, w)
    optimizer = module.configure_optimizers()["optimizer"]
    lr_of = {id(p): group["initial_lr"] for group in optimizer.param_groups for p in group["params"]}  # before warmup
    for name, p in module.named_parameters():
        expected = 1e-4 if name.startswith("model.vision.") else 5e-4 if name.startswith("model.audio.") else 1e-3
        assert lr_of[id(p)] == pytest.approx(expected), name
    assert len(lr_of) == sum(1 for p in module.parameters() if p.requires_grad)  # every parameter, once
    assert replaced and all(lr_of[id(w)] == pytest.approx(1e-4) for w in replaced.values())
    kinds = sorted((g["lr_scale"], g["weight_decay"]) for g in optimizer.param_groups)
    assert kinds == [(0.1, 0.0), (0.1, 0.05), (0.5, 0.0), (0.5, 0.05), (1.0, 0.0), (1.0, 0.05)]
    with pytest.raises(ValueError, match="lr_scale: unknown part 'vison'"):
        SFTModule(lr_scale={"vison": 0.1})
    with pytest.raises(ValueError, match="lr_scale: 'vision' is also in freeze"):
        SFTModule(freeze=["vision"], lr_scale={"vision": 0.1})
    with pytest.raises(ValueError, match="lr_scale: vision: expected a positive finite"):
        SFTModule(lr_scale={"vision": 0.0})


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)


def test_contrastive_pairs_choose_what_is_aligned():
    torch.manual_seed(0)
    module = ContrastiveModule(pairs=["image_text", "audio_text"])
    assert sorted(module.logit_scales) == ["audio_text", "image_text"]
    dm = PairedDataModule(config=module.config, batch_size=8, synth_val_size=8)
    metrics = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False).validate(module, dm, verbose=False)[0]
    assert "val/image_text" in metrics and "val/audio_text" in metrics and "val/image_audio" not in metrics
    with pytest.raises(ValueError, match="pairs: expected a non-empty subset of"):
        ContrastiveModule(pairs=["image_sound"])
    with pytest.raises(ValueError, match="pairs"):
        ContrastiveModule(pairs=[])


def test_contrastive_centering_removes_what_every_input_shares():
    """center=True: a state every present row shares (an untrained encoder's common output) leaves the
    projected embeddings unchanged, absent rows do not enter the mean; center=False keeps it."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    module = ContrastiveModule(pairs=["image_text"], center=True)
    pooled = torch.randn(4, module.projections["image"].in_features)  # [B, W]
    present = torch.tensor([True, True, True, False])
    shared = 10 * torch.randn(1, pooled.shape[1])  # [1, W]

    def embed(states):
        return module._embed({"image": SimpleNamespace(pooled=states, present=present)}, "image", 4)[0]  # [B, E]

    with torch.no_grad():
        torch.testing.assert_close(embed(pooled + shared)[present], embed(pooled)[present], atol=1e-4, rtol=0)
        assert embed(pooled)[present].sum(0).abs().max() < 1e-5
        module.hparams.center = False
        assert not torch.allclose(embed(pooled + shared), embed(pooled), atol=1e-2)


def test_data_tokenizer_must_match_the_init_from_vocabulary(tmp_path):
    """A CLM stage from an export must read the text with that export's vocabulary, never a fresh one."""
    from mmr1.datamodules.tokenizer import Tokenizer
    from mmr1.objectives.base import check_same_vocabulary

    Tokenizer.default().save(tmp_path / "export")
    check_same_vocabulary(str(tmp_path / "export"), Tokenizer.default())
    check_same_vocabulary(None, Tokenizer.train(["a b c"] * 10, vocab_size=300))
    fresh = Tokenizer.train(["The picture shows 4. The sound says 7. 4 - 7 = -3."] * 20, vocab_size=300)
    with pytest.raises(ValueError, match="data tokenizer: its vocabulary differs.*--data.init_args.tokenizer"):
        check_same_vocabulary(str(tmp_path / "export"), fresh)


def test_reference_copy_is_frozen_and_answers_bit_for_bit_like_the_policy():
    """RL's reference: no gradients, out of training, and the same log-probs as an unchanged policy (audio too)."""
    from mmr1.config import Config
    from mmr1.model import MultimodalModel
    from mmr1.objectives.base import reference_copy

    torch.manual_seed(0)
    policy = MultimodalModel(Config.from_name("tiny")).eval()
    reference = reference_copy(policy)
    assert not any(p.requires_grad for p in reference.parameters()) and not reference.training
    g = torch.Generator().manual_seed(1)
    inputs = {"input_ids": torch.randint(11, 400, (2, 6), generator=g),
              "attention_mask": torch.ones(2, 6, dtype=torch.bool),
              "pixel_values": torch.randn(2, 3, 32, 32, generator=g), "image_mask": torch.ones(2, dtype=torch.bool),
              "audio_values": torch.randn(2, 4000, generator=g) * 0.1, "audio_lengths": torch.tensor([4000, 2500])}
    with torch.no_grad():
        assert torch.equal(policy(**inputs)[0].logits, reference(**inputs)[0].logits)


def test_contrastive_aligns_images_against_their_captions_hard_negatives():
    """Built-in records carry `image_negatives`: with hard_negatives they enter the image→text loss (not the
    audio's) and validation logs how often an image's caption beats all of its negatives; without, nothing
    changes."""
    torch.manual_seed(0)
    module = ContrastiveModule(pairs=["image_text", "audio_text"], hard_negatives=True)
    dm = PairedDataModule(config=module.config, batch_size=8, synth_train_size=8, synth_val_size=8, augment=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image_negative_ids"].shape[0] == 3 * int(batch["image_mask"].sum())
    module.eval()
    with torch.no_grad():
        with_negatives = module.losses(batch)
        plain = module.losses({k: v for k, v in batch.items() if "_negative_" not in k})
    assert with_negatives["image_text"] > plain["image_text"]
    torch.testing.assert_close(with_negatives["audio_text"], plain["audio_text"])
    metrics = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False).validate(module, dm, verbose=False)[0]
    assert 0.0 <= metrics["val/image_beats_negatives"] <= 1.0
    module.hparams.hard_negatives = False
    with torch.no_grad():
        torch.testing.assert_close(module.losses(batch)["image_text"], plain["image_text"])


def test_contrastive_pairs_a_medium_with_its_own_caption_and_repeated_texts_are_positives():
    """With `{m}_text_ids` (records' image_caption / audio_caption) that medium is scored against them, the other
    medium against the records' text (every medium, with medium_captions off); rows holding one text (equal
    keys) are positives unless same_text_positives is off."""
    torch.manual_seed(0)
    module = ContrastiveModule(pairs=["image_text", "audio_text"], medium_captions=True, same_text_positives=True).eval()
    dm = PairedDataModule(config=module.config, batch_size=8, synth_train_size=16, augment=False)
    dm.setup("fit")
    batch = next(b for b in dm.train_dataloader() if b["image_mask"].sum() >= 3 and "audio_values" in b)
    assert {"image_text_ids", "audio_text_ids"} <= set(batch)  # built-in records carry each medium's caption
    batch = {key: value for key, value in batch.items() if not key.startswith(("image_text_", "audio_text_"))}
    flipped = {key: batch[key].flip(0) for key in ("text_ids", "text_mask", "text_keys")}
    own = {**batch, **{f"image_{key}": value for key, value in flipped.items()}}
    with torch.no_grad():
        with_own, swapped, plain = module.losses(own), module.losses({**batch, **flipped}), module.losses(batch)
        torch.testing.assert_close(with_own["image_text"], swapped["image_text"])
        torch.testing.assert_close(with_own["audio_text"], plain["audio_text"])
        one_text = {**own, "image_text_keys": torch.zeros_like(own["image_text_keys"])}  # every row one text
        repeated = module.losses(one_text)["image_text"]
        module.hparams.same_text_positives = False
        torch.testing.assert_close(module.losses(one_text)["image_text"], with_own["image_text"])
        module.hparams.medium_captions = False  # every medium against the records' text
        torch.testing.assert_close(module.losses(own)["image_text"], plain["image_text"])
    assert not torch.isclose(repeated, with_own["image_text"])  # the keys reach the loss
    with pytest.raises(ValueError, match="hard_negatives"):
        ContrastiveModule(hard_negatives=True, medium_captions=True)


def test_caption_words_each_medium_predicts_the_tokens_of_its_caption():
    """SuperClass beside InfoNCE: the image's head is trained towards its caption's bag of tokens only (not the
    padding, not other rows'), and the loss enters the total with its weight; 0 builds no head."""
    torch.manual_seed(0)
    module = ContrastiveModule(pairs=["image_text"], caption_words=0.5)
    dm = PairedDataModule(config=module.config, batch_size=4, synth_train_size=8, augment=False)
    dm.setup("fit")
    batch = next(b for b in dm.train_dataloader() if b["image_mask"].all())
    losses = module.losses(batch)
    torch.testing.assert_close(losses["loss"], losses["image_text"] + 0.5 * losses["image_words"])
    head = module.word_heads["image"]
    pooled = module.model.encode(**{k: batch[k] for k in ("pixel_values", "image_mask")})["image"].pooled
    logits = head(pooled)  # [B, V]
    want = []
    for row in range(len(logits)):
        words = sorted(set(batch["text_ids"][row][batch["text_mask"][row]].tolist()))
        want.append(-logits[row].log_softmax(-1)[words].mean())
    torch.testing.assert_close(losses["image_words"], torch.stack(want).mean(), rtol=1e-4, atol=1e-5)
    assert not ContrastiveModule(pairs=["image_text"]).word_heads
    with pytest.raises(ValueError, match="caption_words"):
        ContrastiveModule(caption_words=-1.0)


def test_regions_name_each_shape_at_its_centre_token_and_every_other_token_no_region():
    """Built-in records carry each shape's box and name: with `regions` the loss adds the cross-entropy of every
    patch token's projected state against the batch's distinct region texts and "no region" (checked by hand
    here), with its weight; the image encoder learns from it; without regions in a batch of images it is
    refused, and without the image_text pair too."""
    torch.manual_seed(0)
    overrides = {"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0}}
    module = ContrastiveModule(pairs=["image_text"], regions=0.5, overrides=overrides)
    dm = PairedDataModule(config=module.config, batch_size=8, synth_train_size=16, augment=False)
    dm.setup("fit")
    batch = next(b for b in dm.train_dataloader() if b["image_mask"].sum() >= 3)
    module.eval()  # no dropout: the loss and the recomputation below see one forward
    losses = module.losses(batch)
    torch.testing.assert_close(losses["loss"], losses["image_text"] + 0.5 * losses["region_text"])
    tokens = module.model.encode(pixel_values=batch["pixel_values"], image_mask=batch["image_mask"])["image"].tokens
    texts = module.projections["text"](module.model.text_encoder(batch["region_text_ids"],
                                                                 batch["region_text_mask"]).pooled)
    b = torch.nn.functional.normalize(torch.cat([texts, module.no_region[None]]), dim=-1)
    scale, want = module.logit_scales["image_text"].exp(), []
    centres = {}
    for r, (box, row) in enumerate(zip(batch["region_boxes"].tolist(), batch["region_rows"].tolist())):
        place = (row, int((box[1] + box[3]) / 2 // 8) * 4 + int((box[0] + box[2]) / 2 // 8))
        centres[place] = None if place in centres else int(batch["region_text_index"][r])
    for row in range(len(tokens)):
        if not batch["image_mask"][row]:
            continue
        for p in range(16):
            target = centres.get((row, p), len(texts))  # no centre: "no region"
            if target is not None:
                a = torch.nn.functional.normalize(module.projections["image"](tokens[row, p]), dim=-1)
                want.append(torch.nn.functional.cross_entropy((scale * b @ a)[None], torch.tensor([target])))
    torch.testing.assert_close(losses["region_text"], torch.stack(want).mean(), rtol=1e-4, atol=1e-5)
    before = snapshot(module)
    losses["region_text"].backward()
    assert module.model.vision.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert module.no_region.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in module.model.named_parameters())
    with pytest.raises(ValueError, match="no record of this batch with an image has `regions`"):
        module.losses({k: v for k, v in batch.items() if not k.startswith("region_")})
    with pytest.raises(ValueError, match="regions"):
        ContrastiveModule(pairs=["audio_text"], regions=1.0)


def test_regions_an_image_whose_record_names_no_region_is_all_no_region():
    """`regions: []` says the image holds nothing to name: every one of its tokens is scored against "no
    region" alone, and the loss stays finite with no region text in the batch."""
    torch.manual_seed(0)
    overrides = {"vision": {"stem": "conv"}, "fusion": {"resampler_tokens": 0}}
    module = ContrastiveModule(pairs=["image_text"], regions=1.0, overrides=overrides).eval()
    processor, collate = RecordProcessor.from_config(module.config), Collator.for_model(module.config, "paired")
    batch = collate([processor({"image": Image.new("RGB", (32, 32)), "caption": f"empty {i}", "regions": []})
                     for i in range(2)])
    assert batch["region_images"].all() and batch["region_boxes"].shape == (0, 4)
    terms = module.region_terms(batch, module.model.encode(pixel_values=batch["pixel_values"],
                                                           image_mask=batch["image_mask"]))
    assert torch.isfinite(terms["region_text"]) and terms["region_accuracy"] in (0.0, 1.0)
