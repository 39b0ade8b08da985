"""Scaling knobs leave the loss and gradients of a fixed batch unchanged; checkpointing lowers peak memory."""

import pytest
import torch

from mmr1.datamodules.datamodules import SFTDataModule
from mmr1.objectives import SFTModule
from mmr1.scaling import PeakMemory


@pytest.fixture(scope="module")
def batch() -> dict:
    data = SFTDataModule(preset="tiny", batch_size=2, synth_train_size=4, augment=False)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def loss_and_grads(batch: dict, **knobs) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """(loss, {name: grad}, peak bytes of the step) of a fresh seeded tiny SFT model with the knobs applied."""
    torch.manual_seed(0)
    module = SFTModule(preset="tiny", **knobs)
    module.configure_model()
    torch.manual_seed(1)  # SpecAugment draws its masks from here
    with PeakMemory() as memory:
        loss = module.losses(batch)["loss"]
        loss.backward()
    return loss.detach(), {n: p.grad for n, p in module.named_parameters() if p.grad is not None}, memory.peak


def assert_same_step(got, want, atol: float) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=atol)
    assert got[1].keys() == want[1].keys()
    for name, grad in want[1].items():
        torch.testing.assert_close(got[1][name], grad, rtol=1e-4, atol=atol, msg=name)


def test_activation_checkpointing_same_step_less_memory(batch):
    plain = loss_and_grads(batch)
    checkpointed = loss_and_grads(batch, activation_checkpointing=True)
    assert_same_step(checkpointed, plain, atol=1e-6)
    assert checkpointed[2] < 0.8 * plain[2]


def test_activation_checkpointing_keeps_parameter_names():
    torch.manual_seed(0)
    module = SFTModule(preset="tiny")
    names = list(module.state_dict())
    module.hparams.activation_checkpointing = True
    module.configure_model()
    assert list(module.state_dict()) == names


@pytest.mark.slow
def test_compile_same_step(batch):
    assert_same_step(loss_and_grads(batch, compile=True), loss_and_grads(batch), atol=1e-5)


def test_peak_memory_counts_live_new_tensors_only():
    weight = torch.zeros(1000)  # exists before: not counted
    with PeakMemory() as memory:
        a = weight + 1  # 4000 bytes
        b = a.view(10, 100)  # a view: no new bytes
        del a
        c = b * 2  # 4000 bytes more while b lives
        del b, c
        d = torch.ones(500)  # 2000 bytes after the others died
    assert memory.peak == 8000 and memory.live == 2000
    del d
