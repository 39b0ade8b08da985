"""Distillation pulls a tiny student towards a deeper frozen teacher; vocabularies must match."""

import pytest
import torch
import torch.nn.functional as F
from mmr1.datamodules.datamodules import SFTDataModule
from mmr1.datamodules.tokenizer import Tokenizer

from mmr1.config import Config
from mmr1.model import MultimodalModel, media_inputs
from mmr1.objectives import DistillModule


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(1)
    model = MultimodalModel(Config.from_name("tiny", core={"n_layers": 6}))
    return model.save_pretrained(tmp_path_factory.mktemp("teacher"), Tokenizer.default())


def kl_to_teacher(module: DistillModule, batch: dict) -> float:
    """KL(teacher || student) at τ = 1 over the response tokens, computed here from the logits."""
    with torch.no_grad():
        student, _ = module.model(batch["input_ids"], batch["attention_mask"], **media_inputs(batch))
        teacher, _ = module.teacher(batch["input_ids"], batch["attention_mask"], **media_inputs(batch))
    keep = batch["labels"][:, 1:] != -100
    s, t = student.logits[:, :-1][keep], teacher.logits[:, :-1][keep]
    return F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean").item()


def test_steps_reduce_the_kl_to_the_teacher(teacher):
    torch.manual_seed(0)
    module = DistillModule(teacher=str(teacher), temperature=2.0, alpha=1.0)  # soft targets only
    module.setup("fit")
    assert module.teacher.config.core.n_layers == 6 and module.config.core.n_layers == 4
    data = SFTDataModule(config=module.config, batch_size=2, synth_train_size=2, augment=False)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    before = kl_to_teacher(module.eval(), batch)
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3)
    for _ in range(3):
        optimizer.zero_grad()
        terms = module.train().losses(batch)
        terms["loss"].backward()
        optimizer.step()
    assert torch.isfinite(terms["kl"]) and terms["kl"] >= 0
    after = kl_to_teacher(module.eval(), batch)
    assert after < 0.5 * before
    assert not any("teacher" in k or "_frozen" in k for k in module.state_dict())
    assert all(not p.requires_grad for p in module.teacher.parameters())


def test_a_teacher_with_another_vocabulary_is_refused(tmp_path):
    MultimodalModel(Config.from_name("tiny", core={"vocab_size": 600})).save_pretrained(tmp_path / "big")
    with pytest.raises(ValueError, match="teacher: .*vocab_size=600.*512"):
        DistillModule(teacher=str(tmp_path / "big")).setup("fit")
    other = Tokenizer.train(["a few words to learn a different vocabulary from"] * 4, vocab_size=300)
    MultimodalModel(Config.from_name("tiny")).save_pretrained(tmp_path / "other", other)
    module = DistillModule(teacher=str(tmp_path / "other"))
    module.tokenizer = Tokenizer.default()
    with pytest.raises(ValueError, match="teacher: the tokenizer .* differs"):
        module.setup("fit")


def test_missing_teacher_and_bad_knobs_are_clear(tmp_path):
    with pytest.raises(ValueError, match="teacher: cannot load"):
        DistillModule(teacher=str(tmp_path / "nowhere")).setup("fit")
    with pytest.raises(ValueError, match="alpha"):
        DistillModule(teacher="x", alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillModule(teacher="x", temperature=0)
