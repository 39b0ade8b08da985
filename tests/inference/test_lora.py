"""LoRA in place: only adapters train, training changes outputs, merging keeps them, exports are plain."""

import pytest
import torch
from torch import nn

from mmr1.config import Config
from mmr1.lora import apply_lora, lora_parameters, merge_lora_in_place
from mmr1.model import MultimodalModel
from mmr1.objectives.base import ObjectiveModule
from mmr1.checkpoint import export_ckpt

TEXT_ONLY = {"vision": None, "audio": None, "text": None, "core": {"n_layers": 1}}
LORA = {"r": 4, "targets": ["q_proj", "v_proj"], "parts": ["core"], "alpha": 8}


def next_token_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids)[0].logits  # [B, T, V]
    return nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:])


def perturb_adapters(model: nn.Module) -> None:
    """B starts at zero (an untrained adapter is the identity); give it weights so merging has work to do."""
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(std=0.05)


def test_lora_trains_only_adapters_and_merges_exactly():
    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny", **TEXT_ONLY)).eval()
    ids = torch.randint(11, 500, (2, 10))
    with torch.no_grad():
        before = model(ids)[0].logits
    assert apply_lora(model, r=4, targets=["q_proj", "v_proj"], parts=["core"]) is model
    assert isinstance(model.core, nn.Module) and not hasattr(model, "peft_config")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and len(trainable) == len(lora_parameters(model))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD(lora_parameters(model), lr=0.1)
    for _ in range(3):
        loss = next_token_loss(model, ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    with torch.no_grad():
        unmerged = model(ids)[0].logits
    assert (unmerged - before).abs().max() > 1e-3
    assert merge_lora_in_place(model) is model
    assert not lora_parameters(model) and type(model.core.layers[0].self_attn.q_proj) is nn.Linear
    assert set(model.state_dict()) == set(MultimodalModel(model.config).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0].logits, unmerged, atol=1e-6, rtol=0)


def test_lora_on_encoders_merges_exactly():
    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny", audio=None, text=None, core={"n_layers": 1})).eval()
    apply_lora(model, r=2, targets=["qkv", "fc1"], parts=["vision"])
    adapted = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert adapted and all(n.startswith("vision.") for n in adapted)
    perturb_adapters(model)
    ids, pixels = torch.randint(11, 500, (2, 6)), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        unmerged = model(ids, pixel_values=pixels)[0].logits
        merged = merge_lora_in_place(model)(ids, pixel_values=pixels)[0].logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_modules_to_save_train_whole_beside_the_adapters_and_merge_exactly():
    """The LLaVA recipe's second stage: adapters on the core, the fusion and projector (and an encoder) train
    whole; every other weight stays frozen."""
    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny", text=None, core={"n_layers": 1})).eval()
    apply_lora(model, r=2, targets=["q_proj"], parts=["core"], modules_to_save=["fusion", "audio"])
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trainable == {"fusion", "prefix_proj", "audio"}
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith(("vision.", "core."))
               and "lora_" not in n)
    ids, pixels = torch.randint(11, 500, (2, 6)), torch.randn(2, 3, 32, 32)
    waves = torch.randn(2, 8000)
    loss = next_token_loss(lambda i: model(i, pixel_values=pixels, audio_values=waves), ids)
    loss.backward()
    assert model.prefix_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("vision."))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n.startswith("audio."))
    perturb_adapters(model)
    with torch.no_grad():
        unmerged = model(ids, pixel_values=pixels, audio_values=waves)[0].logits
        merged = merge_lora_in_place(model)(ids, pixel_values=pixels, audio_values=waves)[0].logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)


def test_lora_target_errors():
    model = MultimodalModel(Config.from_name("tiny", **TEXT_ONLY))
    with pytest.raises(ValueError, match="no Linear layer"):
        apply_lora(model, 4, ["nope_proj"])
    with pytest.raises(ValueError, match="unknown part"):
        apply_lora(model, 4, ["q_proj"], parts=["brain"])
    with pytest.raises(ValueError, match=r"lora.modules_to_save: unknown part\(s\) \['brain'\]"):
        apply_lora(model, 4, ["q_proj"], modules_to_save=["brain"])
    with pytest.raises(ValueError, match=r"\['core'\] both get adapters"):
        apply_lora(model, 4, ["q_proj"], modules_to_save=["core"])
    with pytest.raises(ValueError, match=r"lora.modules_to_save: the model has no \['audio'\] part"):
        apply_lora(model, 4, ["q_proj"], modules_to_save=["audio"])
    with pytest.raises(ValueError, match=r"freeze: \['fusion'\] also in lora.modules_to_save"):
        ObjectiveModule(overrides={"text": None, "core": {"n_layers": 1}}, freeze=["fusion"],
                        lora={**LORA, "modules_to_save": ["fusion"]})


def test_objective_with_lora_steps_only_adapters_and_exports_plain_weights(tmp_path):
    torch.manual_seed(0)
    module = ObjectiveModule(overrides=TEXT_ONLY, lora=LORA, warmup_steps=0)
    base = {n: p.detach().clone() for n, p in module.named_parameters() if "lora_" not in n}
    optimizer = module.configure_optimizers()["optimizer"]
    ids = torch.randint(11, 500, (2, 10))
    for _ in range(2):
        optimizer.zero_grad()
        next_token_loss(module.model, ids).backward()
        optimizer.step()
    assert all(torch.equal(p, base[n]) for n, p in module.named_parameters() if n in base)
    assert any(p.abs().sum() > 0 for n, p in module.named_parameters() if "lora_B" in n)
    module.model.eval()
    with torch.no_grad():
        expected = module.model(ids)[0].logits

    exported = MultimodalModel.from_pretrained(module.export_model().save_pretrained(tmp_path / "direct")).eval()
    assert lora_parameters(module.model), "export_model merges a copy; the module keeps training adapters"

    checkpoint = {"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["mmr1_lora"] == LORA
    torch.save(checkpoint, tmp_path / "lora.ckpt")
    from_ckpt = MultimodalModel.from_pretrained(export_ckpt(tmp_path / "lora.ckpt", tmp_path / "export")).eval()

    for model in (exported, from_ckpt):
        assert not any("lora_" in k or "base_layer" in k for k in model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model(ids)[0].logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_trainable_tokens_train_only_their_rows_and_export(tmp_path, tied):
    """lora.trainable_tokens: the <think>/<answer> rows of the embedding and LM head move with the adapters,
    every other row stays bit-identical (no weight decay either), and the export keeps the trained rows."""
    from mmr1.datamodules.tokenizer import Tokenizer

    torch.manual_seed(0)
    settings = {**LORA, "trainable_tokens": ["<think>", "<answer>"]}
    overrides = {**TEXT_ONLY, "core": {"n_layers": 1, "tie_embeddings": tied}}
    module = ObjectiveModule(overrides=overrides, lora=settings, warmup_steps=0, weight_decay=0.5)
    module.tokenizer = Tokenizer.default()
    module.setup("fit")
    module.setup("validate")  # setup runs once per stage: the rows are made trainable once
    rows = [module.tokenizer.token_id("<think>"), module.tokenizer.token_id("<answer>")]
    core = module.model.core
    before = {name: w.detach().clone() for name, w in (("embed", core.embed_tokens.weight), ("head", core.lm_head.weight))}
    optimizer = module.configure_optimizers()["optimizer"]
    ids = torch.cat((torch.randint(11, 500, (2, 8)), torch.tensor(rows).expand(2, 2)), dim=1)  # [2, 10]
    for _ in range(2):
        optimizer.zero_grad()
        next_token_loss(module.model, ids).backward()
        optimizer.step()
    others = torch.ones(core.embed_tokens.num_embeddings, dtype=torch.bool)
    others[rows] = False
    for name, weight in (("embed", core.embed_tokens.weight), ("head", core.lm_head.weight)):
        assert torch.equal(weight[others], before[name][others]), name
        assert not torch.equal(weight[rows], before[name][rows]), name
    exported = MultimodalModel.from_pretrained(module.export_model().save_pretrained(tmp_path / "export"))
    torch.testing.assert_close(exported.core.embed_tokens.weight, core.embed_tokens.weight, atol=0, rtol=0)


def test_trainable_tokens_errors():
    from mmr1.datamodules.tokenizer import Tokenizer

    module = ObjectiveModule(overrides=TEXT_ONLY, lora={**LORA, "trainable_tokens": ["<nope>"]})
    with pytest.raises(ValueError, match="trainable_tokens"):
        module.setup("fit")  # no tokenizer
    module.tokenizer = Tokenizer.default()
    with pytest.raises(ValueError, match=r"trainable_tokens: \['<nope>'\] are not in"):
        module.setup("fit")
