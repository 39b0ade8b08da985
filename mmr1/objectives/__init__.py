"""Training objectives: one thin LightningModule per objective (their losses: `mmr1.losses`)."""

from mmr1.objectives.base import ObjectiveModule
from mmr1.objectives.clm import CLMModule
from mmr1.objectives.contrastive import ContrastiveModule
from mmr1.objectives.distill import DistillModule
from mmr1.objectives.dpo import DPOModule
from mmr1.objectives.grpo import GRPOModule
from mmr1.objectives.masked import MaskedModule
from mmr1.objectives.ppo import PPOModule
from mmr1.objectives.prefix_words import PrefixWordsModule
from mmr1.objectives.reward_model import RewardModel, RewardModelModule
from mmr1.objectives.sft import SFTModule

__all__ = [
    "CLMModule", "ContrastiveModule", "DPOModule", "DistillModule", "GRPOModule", "MaskedModule", "ObjectiveModule",
    "PPOModule", "PrefixWordsModule", "RewardModel", "RewardModelModule", "SFTModule"
]
