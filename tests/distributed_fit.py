"""Train tiny objectives for 2 steps on 2 CPU processes: `python tests/distributed_fit.py ddp|fsdp OUT`.

ddp: ContrastiveModule and SFTModule under `ddp_find_unused_parameters_true`; fsdp: SFTModule(fsdp=True)
under ModelParallelStrategy (FSDP2). Rank 1's batches lose their audio, so an encoder that one rank uses
is unused on the other. Each rank saves `OUT/{objective}.{rank}.pt`: its batches (as the data module
hands them over), each step's loss, its parameters (full tensors under DDP, this rank's shards under FSDP2) with their full shapes, and
for SFT the single-process loss of its first batch under the initial weights.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.tensor import DTensor

from mmr1.datamodules.datamodules import PairedDataModule, SFTDataModule
from mmr1.objectives import ContrastiveModule, SFTModule

OVERRIDES = {"core": {"n_layers": 1}, "audio": {"freq_mask": 0, "time_mask": 0}}  # no SpecAugment: losses repeat
STEP_SEED = 1
AUDIO_KEYS = ("audio_values", "audio_lengths")
OBJECTIVES = {"sft": (SFTModule, SFTDataModule), "contrastive": (ContrastiveModule, PairedDataModule)}


def without_audio_on_rank_1(data_class: type[L.LightningDataModule]) -> type[L.LightningDataModule]:
    """`data_class` whose batches lose their audio on rank 1 and are kept in `batches`."""

    class Data(data_class):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.batches: list[dict] = []

        def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
            batch = super().on_before_batch_transfer(batch, dataloader_idx)
            if self.trainer.global_rank == 1:
                for key in AUDIO_KEYS:
                    batch.pop(key, None)
            self.batches.append(dict(batch))  # a copy: the module may add keys in place
            return batch

    return Data


class Steps(L.Callback):
    """Seeds each training step (the text encoder's dropout draws from torch's RNG) and keeps its loss."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        torch.manual_seed(STEP_SEED)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach())


def parameters(module: L.LightningModule) -> dict[str, dict]:
    """{name: {"local": this rank's tensor (its shard under FSDP2), "shape": the full shape}}."""
    return {name: {"local": (p.to_local() if isinstance(p, DTensor) else p).detach().clone(), "shape": tuple(p.shape)}
            for name, p in module.named_parameters()}


def fit(objective: str, strategy, out: Path, **knobs) -> None:
    """Two steps of `objective` under `strategy`, then save this rank's record."""
    L.seed_everything(0, verbose=False)
    module_class, data_class = OBJECTIVES[objective]
    module = module_class(preset="tiny", overrides=OVERRIDES, warmup_steps=0, **knobs)
    single = copy.deepcopy(module)  # unwrapped, never trained
    data = without_audio_on_rank_1(data_class)(config=module.config, batch_size=2, synth_train_size=8, augment=False)
    steps = Steps()
    trainer = L.Trainer(strategy=strategy, devices=2, accelerator="cpu", max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[steps])
    trainer.fit(module, data)
    record = {"batches": data.batches, "losses": steps.losses, "parameters": parameters(module)}
    if objective == "sft":  # the contrastive loss gathers both ranks' rows: one rank's batch has no reference
        torch.manual_seed(STEP_SEED)
        record["single_process_loss"] = single.losses(data.batches[0])["loss"].detach()
    torch.save(record, out / f"{objective}.{trainer.global_rank}.pt")


def main(mode: str, out: str) -> None:
    if mode == "ddp":
        for objective in ("contrastive", "sft"):
            fit(objective, "ddp_find_unused_parameters_true", Path(out))
    else:
        fit("sft", ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1), Path(out), fsdp=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
