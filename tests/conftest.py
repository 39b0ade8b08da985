"""Fixtures shared by every test folder."""

from pathlib import Path

import pytest
import torch

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The read-only data folder beside the repository (../shared/data), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_hf_folder(tmp_path_factory) -> Path:
    """A Hugging Face chat-model folder: a random 2-layer Llama with a byte-level BPE ChatML
    tokenizer (bos <|im_start|>, eos <|im_end|>) that has none of mmr1's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_hf")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = ["What is 12 + 30?", "Name the largest planet.", "Tom has 3 apples and buys 5 more.", "user assistant"]
    backend.train_from_iterator(texts * 8, trainer)
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                           unk_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=CHATML)
    hf_tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The `tiny` preset with larger random weights (so greedy outputs vary), saved as a folder."""
    from mmr1.config import Config
    from mmr1.datamodules.tokenizer import Tokenizer
    from mmr1.model import MultimodalModel

    torch.manual_seed(0)
    model = MultimodalModel(Config.from_name("tiny", core={"initializer_range": 0.2}))
    return model.save_pretrained(tmp_path_factory.mktemp("tiny"), Tokenizer.default())
