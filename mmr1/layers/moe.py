"""DeepSeek-MoE feed-forward: shared experts for every token plus top-k routed experts,
balanced without an auxiliary loss (DeepSeek-V3): a per-expert bias shifts only the
*choice* of experts and is nudged after each step toward uniform load."""

from __future__ import annotations

import torch
from torch import nn

from mmr1.config import CoreConfig
from mmr1.layers.mlp import SwiGLU


class MoE(nn.Module):
    def __init__(self, cfg: CoreConfig):
        super().__init__()
        self.top_k = cfg.n_experts_per_token
        self.n_experts = cfg.n_routed_experts
        self.router = nn.Linear(cfg.d_model, cfg.n_routed_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.moe_intermediate_size) for _ in range(self.n_experts))
        hidden_shared = cfg.moe_intermediate_size * cfg.n_shared_experts
        self.shared = SwiGLU(cfg.d_model, hidden_shared) if cfg.n_shared_experts else None
        # Not trained by gradients: moved by `update_routing_bias`.
        self.register_buffer("routing_bias", torch.zeros(self.n_experts))
        # Tokens routed to each expert in training since the last bias update.
        self.register_buffer("expert_load", torch.zeros(self.n_experts), persistent=False)

    def route(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [N, D] -> chosen experts [N, k] and their gate weights [N, k]."""
        scores = torch.sigmoid(self.router(h).float())  # [N, E]
        chosen = (scores + self.routing_bias).topk(self.top_k, dim=-1).indices  # [N, k]
        weights = scores.gather(1, chosen)  # the bias does not enter the weights
        return chosen, (weights / weights.sum(dim=-1, keepdim=True)).to(h.dtype)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., D] -> [..., D]; `token_mask` [...] bool marks the real tokens, the only ones
        counted in the expert load (padding and tokens after an eos are routed but not counted)."""
        shape = x.shape
        h = x.reshape(-1, shape[-1])  # [N, D]
        chosen, weights = self.route(h)
        if self.training:
            counted = chosen if token_mask is None else chosen[token_mask.reshape(-1)]  # [N_real, k]
            self.expert_load += torch.bincount(counted.flatten(), minlength=self.n_experts).to(self.expert_load)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)
            if token.numel():
                out.index_add_(0, token, expert(h[token]) * weights[token, slot, None])
        if self.shared is not None:
            out = out + self.shared(h)
        return out.view(shape)

    def load_fraction(self) -> torch.Tensor:
        """[E]: share of routed tokens each expert received since the last update (for logging)."""
        return self.expert_load / self.expert_load.sum().clamp(min=1)

    @torch.no_grad()
    def update_routing_bias(self, rate: float) -> None:
        """b_e += rate * sign(mean load - load_e); then reset the load count.

        Under data parallelism, all-reduce `expert_load` across ranks before calling this.
        """
        if self.expert_load.sum() > 0:
            self.routing_bias += rate * torch.sign(self.expert_load.mean() - self.expert_load)
        self.expert_load.zero_()
