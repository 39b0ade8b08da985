"""SFT's optional classification term: cross-entropy of the class head on the pooled prompt."""

import pytest
import torch
import torch.nn.functional as F

from mmr1.datamodules.collate import Collator
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.objectives.sft import SFTModule

CHOICES = ["cat", "dog", "bird"]
TEXT_ONLY = {"vision": None, "audio": None, "core": {"n_layers": 1}}


def labelled_batch(labels: list) -> dict:
    examples = [{"id": f"r{i}", "question": f"Which animal says {word}?", "reasoning": "It is known.",
                 "answer": str(label), "label": label, "choices": CHOICES, "pixel_values": None,
                 "audio_values": None} for i, (word, label) in enumerate(zip(["meow", "woof", "tweet"], labels))]
    return Collator(Tokenizer.default(), "sft")(examples)


def test_classification_term_is_the_weighted_cross_entropy_of_the_prompt_logits():
    torch.manual_seed(0)
    module = SFTModule(classification_weight=0.5, overrides={**TEXT_ONLY, "n_classes": 3}).eval()
    batch = labelled_batch(["cat", 1, "bird"])
    terms = module.losses(batch)
    prompts = [row[(labels == -100) & mask] for row, labels, mask in
               zip(batch["input_ids"], batch["labels"], batch["attention_mask"])]
    with torch.no_grad():  # each prompt alone, unpadded: the response never reaches the classifier
        logits = torch.cat([module.model.classify(p[None], text_ids=t[None], text_mask=m[None])
                            for p, t, m in zip(prompts, batch["text_ids"], batch["text_mask"])])
    expected = F.cross_entropy(logits, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(terms["classification"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["loss"], terms["lm"] + 0.5 * expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_the_class_head_gets_a_gradient_only_under_a_positive_weight(weight):
    torch.manual_seed(0)
    module = SFTModule(classification_weight=weight, overrides={**TEXT_ONLY, "n_classes": 3})
    module.losses(labelled_batch([0, 1, 2]))["loss"].backward()
    grad = module.model.classifier.proj.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == bool(weight)


def test_weight_zero_ignores_class_labels_and_bad_setups_are_clear():
    module = SFTModule(overrides=TEXT_ONLY)
    assert set(module.losses(labelled_batch([0, 1, 2]))) == {"loss"}
    with pytest.raises(ValueError, match="classification_weight: the model has no classification head"):
        SFTModule(classification_weight=1.0, overrides=TEXT_ONLY)
    module = SFTModule(classification_weight=1.0, overrides={**TEXT_ONLY, "n_classes": 2})
    with pytest.raises(ValueError, match="class_labels: label 2 is out of range for n_classes=2"):
        module.losses(labelled_batch([0, 1, 2]))
    unlabelled = labelled_batch([0, 1, 2])
    del unlabelled["class_labels"]
    with pytest.raises(ValueError, match="a batch has no class_labels"):
        module.losses(unlabelled)
