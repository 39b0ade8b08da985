"""A small untrained checkpoint folder shared by the inference tests."""

import pytest
import torch

from mmr1.config import Config
from mmr1.datamodules.tokenizer import Tokenizer
from mmr1.model import MultimodalModel


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The `tiny` preset with larger random weights (so greedy outputs vary), saved as a folder."""
    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny", core={"initializer_range": 0.2}))
    return model.save_pretrained(tmp_path_factory.mktemp("tiny"), Tokenizer.default())
