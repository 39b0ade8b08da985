"""Data parallelism for real across 2 CPU processes (gloo): the contrastive loss with ranks holding different
numbers of pairs, and Lightning DDP training with a modality missing from one rank's batches."""

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmr1.losses.contrastive import clip_loss

FIT_SCRIPT = Path(__file__).with_name("distributed_fit.py")
ROWS = 6  # padded rows per rank
VALID = [torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool), torch.tensor([1, 0, 1, 0, 0, 0], dtype=torch.bool)]


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a, b [2 * ROWS, 8] for both ranks together and a logit scale, the same in every process."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2 * ROWS, 8, generator=generator), torch.randn(2 * ROWS, 8, generator=generator), \
        torch.tensor(2.0)


def worker(rank: int, out: str) -> None:
    # A file store, not a TCP store on a port picked beforehand that another process may take meanwhile.
    dist.init_process_group("gloo", init_method=f"file://{out}.store", rank=rank, world_size=2)
    a, b, scale = inputs()
    a = a[rank * ROWS:(rank + 1) * ROWS].clone().requires_grad_()
    b = b[rank * ROWS:(rank + 1) * ROWS].clone().requires_grad_()
    scale.requires_grad_()
    loss = clip_loss(a, b, scale, rank, 2, valid=VALID[rank])
    loss.backward()
    # The objective is the mean of the ranks' losses (DDP averages gradients). A rank's own rows already
    # collect every rank's gradient through all_gather's backward (a sum); a shared parameter's is all-reduced.
    dist.all_reduce(scale.grad)
    dist.all_reduce(loss_sum := loss.detach().clone())
    torch.save({"loss": loss_sum / 2, "a": a.grad / 2, "b": b.grad / 2, "scale": scale.grad / 2}, f"{out}.{rank}")
    dist.barrier()  # neither rank tears down while the other still has work in flight
    dist.destroy_process_group()
    # torch 2.11 sometimes aborts in interpreter teardown after a gloo group ("terminate called without an active
    # exception", about 1 run in 15 here). The result is saved and the group destroyed: leave without that teardown.
    os._exit(0)


def test_padded_gathered_loss_equals_single_process_loss_over_valid_rows(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(worker, args=(out,), nprocs=2, join=True)

    a, b, scale = inputs()
    keep = torch.cat(VALID)
    a, b, scale = a.requires_grad_(), b.requires_grad_(), scale.requires_grad_()
    single = clip_loss(a[keep], b[keep], scale)  # the 6 real pairs of both ranks in one batch
    single.backward()
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        rows = slice(rank * ROWS, (rank + 1) * ROWS)
        torch.testing.assert_close(got["loss"], single.detach())
        torch.testing.assert_close(got["a"], a.grad[rows])
        torch.testing.assert_close(got["b"], b.grad[rows])
        torch.testing.assert_close(got["scale"], scale.grad)


def test_lightning_ddp_keeps_replicas_identical_when_one_rank_lacks_a_modality(tmp_path):
    """ContrastiveModule and SFTModule for 2 steps under Lightning DDP; rank 1's batches have no audio."""
    run = subprocess.run([sys.executable, str(FIT_SCRIPT), "ddp", str(tmp_path)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    for objective in ("contrastive", "sft"):
        ranks = [torch.load(tmp_path / f"{objective}.{rank}.pt", weights_only=True) for rank in range(2)]
        assert all(len(r["losses"]) == 2 and all(torch.isfinite(loss) for loss in r["losses"]) for r in ranks)
        ids = [{i for batch in r["batches"] for i in batch["ids"]} for r in ranks]
        assert len(ids[0]) == len(ids[1]) == 4 and not ids[0] & ids[1]  # the sampler split the data
        assert any("audio_values" in batch for batch in ranks[0]["batches"])
        assert not any("audio_values" in batch for batch in ranks[1]["batches"])
        for name, p in ranks[0]["parameters"].items():
            assert torch.equal(p["local"], ranks[1]["parameters"][name]["local"]), f"{objective}: {name} differs"
        if objective == "sft":  # step 1 is the unwrapped model's loss on the rank's batch
            for r in ranks:
                torch.testing.assert_close(r["losses"][0], r["single_process_loss"])
