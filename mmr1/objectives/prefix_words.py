"""Projector alignment in the core's own vocabulary, for a model with `fusion.vocab_prefix` (the prefix as
mixtures of the core's token embeddings): each medium's span of prefix positions, averaged, is a distribution
over the vocabulary, trained towards the bag of that medium's caption tokens. LLaVA's first stage aligns the
projector by captioning through the frozen LLM; this asks the prefix to *be* the caption's words, so a
pretrained core later reads "7" where the picture shows a 7, and it never runs the core: a step costs the
encoders, the fusion and one vocabulary-wide projection."""

from __future__ import annotations

import torch

from mmr1.encoders.output import masked_mean
from mmr1.losses.language import bag_of_tokens_loss, token_bag
from mmr1.model import media_inputs
from mmr1.objectives.base import ObjectiveModule


class PrefixWordsModule(ObjectiveModule):
    """Reads `PairedDataModule` batches ({m}_caption_ids / _mask: each medium's caption in the core's vocabulary;
    `caption_templates: true` keeps only their varying words). Logs per medium the loss and `{m}_r1`: the share of
    rows whose prefix gives its own caption's bag a likelihood no other caption of the batch beats."""

    def __init__(self, **base):
        """
        Args:
            **base: model, optimiser and freezing arguments of ObjectiveModule; `freeze: [core, vision, audio]`
                trains the fusion and projector alone (the core gets no gradient here in any case).
        """
        super().__init__(**base)
        if not self.config.fusion.vocab_prefix:
            raise ValueError("fusion.vocab_prefix: PrefixWordsModule trains the prefix's distributions over the "
                             "core's vocabulary; this model projects linearly (overrides {fusion: {vocab_prefix: true}})")
        self.save_hyperparameters()

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        # the image and audio only: a paired batch's text_ids are its captions, which the prefix must not read
        media = {k: v for k, v in media_inputs(batch).items() if not k.startswith("text_")}
        probs, mask, spans = self.model.prefix_vocabulary(**media)  # [B, P, V], [B, P]
        terms = {}
        for medium, (start, end) in spans.items():
            if f"{medium}_caption_ids" not in batch:
                continue
            ids, id_mask = batch[f"{medium}_caption_ids"], batch[f"{medium}_caption_mask"]  # [B, L]
            mean = masked_mean(probs[:, start:end], mask[:, start:end])  # [B, V]: the span's averaged distribution
            rows = id_mask.any(1) & mask[:, start:end].any(1)  # [B], a caption and the medium
            if not rows.any():
                terms[f"{medium}_words"] = probs.sum() * 0.0  # keeps the graph whole (DDP)
                continue
            log_mean, bag = mean[rows].clamp_min(1e-12).log(), token_bag(ids, id_mask, probs.shape[-1])[rows]
            terms[f"{medium}_words"] = bag_of_tokens_loss(log_mean, bag)
            with torch.no_grad():
                scores = log_mean @ bag.T  # [N, N]: row i's prefix, caption j's mean log-likelihood
                terms[f"{medium}_r1"] = (scores.max(1).values <= scores.diagonal() + 1e-6).float().mean()
        words = [value for key, value in terms.items() if key.endswith("_words")]
        if not words:
            raise ValueError("batch: no medium has its own caption in the core's vocabulary ({m}_caption_ids: "
                             "records need image_caption / audio_caption, read by PairedDataModule)")
        return {"loss": sum(words) / len(words), **terms}
