"""Discrete MIM: the online k-means codebook of visual words, its loss, and MaskedModule with mim_target="tokens"."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mmr1.datamodules.datamodules import MaskedDataModule
from mmr1.objectives import MaskedModule
from mmr1.objectives.codebook import PatchCodebook, kmeans_statistics
from mmr1.losses.masked import masked_token_loss

K, DIM = 6, 12


def clusters(n_points: int, centres: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n_points [M, DIM] around random ones of centres [K, DIM] (noise 0.1), and their cluster [M]."""
    labels = torch.randint(len(centres), (n_points,), generator=generator)
    return centres[labels] + 0.1 * torch.randn(n_points, DIM, generator=generator), labels


def fitted(steps: int, seed: int = 0) -> tuple[PatchCodebook, torch.Tensor, torch.Generator]:
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(K, DIM, generator=data)
    codebook = PatchCodebook(K, DIM)
    for _ in range(steps):
        codebook.update(clusters(64, centres, data)[0])
    return codebook, centres, data


def test_codebook_recovers_well_separated_clusters():
    codebook, centres, data = fitted(steps=10)
    points, labels = clusters(500, centres, data)
    codes = codebook(points)  # [M]
    code_of = [codes[labels == k].unique() for k in range(K)]
    assert all(len(c) == 1 for c in code_of), code_of  # every cluster's points map to one code
    code_of = torch.cat(code_of)
    assert len(code_of.unique()) == K  # and the clusters to distinct codes
    torch.testing.assert_close(codebook.centroids[code_of], centres, atol=0.05, rtol=0)


def test_codes_are_deterministic_for_a_seed():
    first, centres, data = fitted(steps=3, seed=1)
    second, _, _ = fitted(steps=3, seed=1)
    torch.testing.assert_close(first.centroids, second.centroids, atol=0, rtol=0)
    points = clusters(100, centres, data)[0]
    assert torch.equal(first(points), second(points))


def test_dead_code_is_reseeded_from_a_patch():
    codebook, centres, data = fitted(steps=2)
    codebook.centroids[0] = 1e3  # wins nothing from now on; its count fades below dead_count
    codebook.counts[0] = 0.0
    batch = clusters(64, centres, data)[0]
    codebook.update(batch)
    assert (codebook.centroids[0] == batch).all(-1).any()
    assert codebook.counts[0] == 1.0


def test_statistics_summed_over_ranks_give_the_whole_batch_update():
    """What DDP does: each rank's sums and counts all-reduced, here faked by adding the other rank's."""
    whole, centres, data = fitted(steps=2)
    split = PatchCodebook(K, DIM)
    split.load_state_dict(whole.state_dict())
    batch = clusters(64, centres, data)[0]
    own, other = batch.chunk(2)
    other_stats = kmeans_statistics(other, split.centroids)
    split.update(own, reduce=lambda stats: stats + other_stats)
    whole.update(batch)
    torch.testing.assert_close(split.centroids, whole.centroids)
    torch.testing.assert_close(split.counts, whole.counts)


def test_token_loss_covers_masked_patches_only():
    torch.manual_seed(0)
    logits, codes = torch.randn(2, 5, K), torch.randint(K, (2, 5))
    mask = torch.tensor([[True, False, True, False, False], [False, True, False, False, True]])
    loss = masked_token_loss(logits, codes, mask)
    torch.testing.assert_close(loss, F.cross_entropy(logits[mask], codes[mask]))
    unmasked_changed = codes.clone()
    unmasked_changed[0, 1] = (codes[0, 1] + 1) % K
    assert masked_token_loss(logits, unmasked_changed, mask) == loss
    masked_changed = codes.clone()
    masked_changed[0, 0] = (codes[0, 0] + 1) % K
    assert masked_token_loss(logits, masked_changed, mask) != loss


def test_masked_module_with_tokens_trains_and_fits_its_codebook():
    torch.manual_seed(0)
    module = MaskedModule(mim_target="tokens", codebook_size=16, mlm_weight=0.0, mam_weight=0.0)
    assert module.mim_head.out_features == 16
    seen = []

    class RecordCodebook(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append(pl_module.codebook.centroids.clone())

    dm = MaskedDataModule(config=module.config, batch_size=4, synth_train_size=8, synth_val_size=4)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[RecordCodebook()])
    trainer.fit(module, dm)
    assert torch.isfinite(trainer.callback_metrics["train/mim"])
    assert len(seen) == 2 and seen[0].abs().sum() > 0 and not torch.equal(seen[0], seen[1])
    state = module.state_dict()  # what the .ckpt holds
    assert {"codebook.centroids", "codebook.counts", "codebook.initialised"} <= set(state)
    restored = MaskedModule(mim_target="tokens", codebook_size=16)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.codebook.centroids, module.codebook.centroids)


def test_unknown_mim_target_is_refused():
    with pytest.raises(ValueError, match="mim_target: unknown 'words'"):
        MaskedModule(mim_target="words")
