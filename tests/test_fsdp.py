"""FSDP2 (ModelParallelStrategy) on 2 CPU processes: each rank holds half of each block's weights, the sharded
model's loss equals the single-process loss, and training runs with a modality missing from one rank."""

import subprocess
import sys
from pathlib import Path

import torch

FIT_SCRIPT = Path(__file__).with_name("distributed_fit.py")
WEIGHT = "model.core.layers.0.mlp.gate_proj.weight"  # [intermediate, d_model]


def test_fsdp2_shards_weights_matches_single_process_loss_and_trains(tmp_path):
    run = subprocess.run([sys.executable, str(FIT_SCRIPT), "fsdp", str(tmp_path)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"sft.{rank}.pt", weights_only=True) for rank in range(2)]
    for r in ranks:
        assert len(r["losses"]) == 2 and all(torch.isfinite(loss) for loss in r["losses"])
        torch.testing.assert_close(r["losses"][0], r["single_process_loss"])  # rank 1's without its audio
        for name, p in r["parameters"].items():
            if name.startswith("model.core.layers.") or ".blocks." in name:
                assert p["local"].shape[0] == p["shape"][0] // 2, name
    halves = [r["parameters"][WEIGHT]["local"] for r in ranks]
    assert halves[0].shape == halves[1].shape == (ranks[0]["parameters"][WEIGHT]["shape"][0] // 2, 128)
    ids = [{i for batch in r["batches"] for i in batch["ids"]} for r in ranks]
    assert len(ids[0]) == len(ids[1]) == 4 and not ids[0] & ids[1]  # ModelParallelStrategy split the data
    assert not any("audio_values" in batch for batch in ranks[1]["batches"])
