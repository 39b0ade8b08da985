"""Visual words for discrete MIM: a codebook of patch vectors fitted by online k-means, with no gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

Reduce = Callable[[torch.Tensor], torch.Tensor]


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """x summed over the ranks (in place) when torch.distributed runs; x itself otherwise."""
    if distributed():
        dist.all_reduce(x)
    return x


def broadcast_from_rank0(x: torch.Tensor) -> torch.Tensor:
    """Rank 0's x on every rank (in place) when torch.distributed runs; x itself otherwise."""
    if distributed():
        dist.broadcast(x, 0)
    return x


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index [...] of the nearest (Euclidean) of centroids [K, F] to each vector of x [..., F], in float32."""
    with torch.autocast(x.device.type, enabled=False):
        flat, c = x.reshape(-1, x.shape[-1]).float(), centroids.float()  # [M, F], [K, F]
        distance = c.pow(2).sum(-1) - 2 * flat @ c.T  # [M, K] squared distance less |x|², which argmin ignores
        return distance.argmin(-1).reshape(x.shape[:-1])


def kmeans_plus_plus(x: torch.Tensor, k: int) -> torch.Tensor:
    """k seeds [k, F] drawn from the rows of x [M, F], each with probability ∝ its squared distance to the
    seeds so far (k-means++); rows repeat once every row is a seed (M < k)."""
    seeds = x[torch.randint(len(x), (1,), device=x.device)]  # [1, F]
    gap = (x - seeds).pow(2).sum(-1)  # [M] squared distance to the nearest seed
    for _ in range(k - 1):
        seed = x[torch.multinomial(gap + 1e-12, 1)]  # [1, F]; the epsilon makes it uniform once every gap is 0
        seeds = torch.cat([seeds, seed])
        gap = torch.minimum(gap, (x - seed).pow(2).sum(-1))
    return seeds


def kmeans_statistics(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[K, F + 1]: per centroid, the sum of the rows of x [M, F] nearest it, then their count."""
    codes = nearest(x, centroids)  # [M]
    stats = torch.zeros(len(centroids), x.shape[1] + 1, device=x.device)  # [K, F + 1]
    return stats.index_add_(0, codes, torch.cat([x.float(), x.new_ones(len(x), 1, dtype=torch.float)], 1))


class PatchCodebook(nn.Module):
    """K centroids over patch vectors [F], fitted online by minibatch k-means; `forward` gives the nearest code.

    The first `update` seeds the centroids by k-means++ from its patches. Each update then moves every
    centroid to the running mean of the patches nearest it, old batches fading by `decay` per step
    (counts[k] is that faded number of patches). A code whose count falls below `dead_count` is
    re-seeded from a random patch of the batch (count 1, so it has ~log(dead_count)/log(decay) steps
    to win patches). Under torch.distributed the sums and counts are summed over ranks before the
    step, and seeds come from rank 0, so every rank keeps the same codebook.
    """

    def __init__(self, size: int, dim: int, decay: float = 0.99, dead_count: float = 0.5):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay: {decay} is outside [0, 1]")
        self.decay, self.dead_count = decay, dead_count
        self.register_buffer("centroids", torch.zeros(size, dim))  # [K, F]
        self.register_buffer("counts", torch.zeros(size))  # [K] faded number of patches nearest each
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def size(self) -> int:
        return len(self.centroids)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Codes [...] of patches [..., F]: the index of the nearest centroid."""
        return nearest(patches, self.centroids)

    @torch.no_grad()
    def update(self, patches: torch.Tensor, reduce: Reduce = all_reduce_sum) -> None:
        """One k-means step on patches [M, F] (M may be 0 on some ranks); reduce sums the statistics over ranks."""
        patches = patches.detach().float()
        has_patches = broadcast_from_rank0(torch.tensor(len(patches) > 0, device=patches.device))  # rank 0's
        if not self.initialised:
            if not has_patches:
                return
            self.centroids.copy_(broadcast_from_rank0(kmeans_plus_plus(patches, self.size) if len(patches)
                                                      else torch.zeros_like(self.centroids)))
            self.initialised.fill_(True)
        stats = reduce(kmeans_statistics(patches, self.centroids))  # [K, F + 1]
        sums, counts = stats[:, :-1], stats[:, -1]  # [K, F], [K]
        kept = self.decay * self.counts  # [K]
        total = kept + counts
        moved = (kept[:, None] * self.centroids + sums) / total.clamp(min=1e-12)[:, None]
        self.centroids.copy_(torch.where(total[:, None] > 0, moved, self.centroids))
        self.counts.copy_(total)
        dead = self.counts < self.dead_count  # [K], the same on every rank
        if has_patches and dead.any():
            seeds = patches[torch.randint(len(patches), (self.size,), device=patches.device)] if len(patches) \
                else torch.zeros_like(self.centroids)  # [K, F]; only rank 0's are used
            self.centroids.copy_(torch.where(dead[:, None], broadcast_from_rank0(seeds), self.centroids))
            self.counts.masked_fill_(dead, 1.0)
