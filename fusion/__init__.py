"""Gated cross-attention fusion of image, audio and text tokens."""

from mmr1.fusion.attention import GatedCrossAttention, MaskedCrossAttention
from mmr1.fusion.fusion import MODALITIES, Fusion, FusionOutput
from mmr1.fusion.gate import Gate
from mmr1.fusion.hierarchical import HierarchicalFusion
from mmr1.fusion.pairwise import PairwiseFusion
from mmr1.fusion.resampler import PerceiverResampler

__all__ = [
    "MODALITIES", "Fusion", "FusionOutput", "Gate", "GatedCrossAttention", "HierarchicalFusion",
    "MaskedCrossAttention", "PairwiseFusion", "PerceiverResampler",
]
