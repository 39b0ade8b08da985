"""Training objectives: the losses as plain functions and one thin LightningModule per objective."""

from mmr1.objectives.base import ObjectiveModule
from mmr1.objectives.contrastive import ContrastiveModule
from mmr1.objectives.masked import MaskedModule
from mmr1.objectives.sft import SFTModule

__all__ = ["ContrastiveModule", "MaskedModule", "ObjectiveModule", "SFTModule"]
