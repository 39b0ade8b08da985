import pytest
import torch

from mmr1.datamodules.collate import IGNORE, Collator, pad, prompts_of
from mmr1.datamodules.prompt import format_prompt, format_response
from mmr1.datamodules.tokenizer import Tokenizer


def example(image=False, audio=0, question="How many shapes are in the image?", answer="3", **fields):
    return {"id": fields.pop("id", None), "question": question, "answer": answer,
            "reasoning": fields.pop("reasoning", "I see 3 shapes."),
            "pixel_values": torch.rand(3, 32, 32) if image else None,
            "audio_values": torch.rand(audio) if audio else None,
            "text": None, "caption": None, "chosen": None, "rejected": None, **fields}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default()


def test_mixed_modalities_in_one_batch(tok):
    examples = [example(image=True), example(audio=100), example(), example(image=True, audio=250)]
    batch = Collator(tok, "sft")(examples)
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["image_mask"].tolist() == [True, False, False, True]
    assert torch.equal(batch["pixel_values"][0], examples[0]["pixel_values"])
    assert not batch["pixel_values"][1:3].any()
    assert batch["audio_values"].shape == (4, 250) and batch["audio_values"].dtype == torch.float32
    assert batch["audio_lengths"].tolist() == [0, 100, 0, 250]
    assert torch.equal(batch["audio_values"][1, :100], examples[1]["audio_values"])
    assert not batch["audio_values"][1, 100:].any() and not batch["audio_values"][0].any()
    assert batch["text_mask"].all(dim=1).tolist() == [True] * 4
    # the prompt names exactly the modalities the record has
    markers = [(tok.token_id("<image>") in row.tolist(), tok.token_id("<audio>") in row.tolist())
               for row in batch["input_ids"]]
    assert markers == [(True, False), (False, True), (False, False), (True, True)]


@pytest.mark.parametrize("kinds, keys_absent", [
    ([dict(image=True)] * 2, {"audio_values", "audio_lengths"}),
    ([dict(audio=50), dict(audio=70)], {"pixel_values", "image_mask"}),
    ([dict(), dict()], {"pixel_values", "image_mask", "audio_values", "audio_lengths"}),
])
def test_single_modality_batches_have_no_keys_for_absent_media(tok, kinds, keys_absent):
    batch = Collator(tok, "sft")([example(**k) for k in kinds])
    assert not keys_absent & set(batch)
    assert {"text_ids", "text_mask", "input_ids", "attention_mask", "labels", "answers"} <= set(batch)


def test_sft_labels_are_ignored_exactly_on_prompt_and_padding(tok):
    examples = [example(image=True, question="Q?", reasoning="short", answer="1"),
                example(audio=10, question="A much longer question about the beeps?",
                        reasoning="a long chain of thought " * 3, answer="yes")]
    batch = Collator(tok, "sft")(examples)
    for row, e in enumerate(examples):
        modalities = ["image"] if e["pixel_values"] is not None else ["audio"]
        prompt = tok.encode(format_prompt(e["question"], modalities))
        response = tok.encode(format_response(e["reasoning"], e["answer"]))
        n = len(prompt) + len(response)
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        assert ids[:n].tolist() == prompt + response and mask.tolist() == [True] * n + [False] * (len(mask) - n)
        assert (labels[:len(prompt)] == IGNORE).all() and (labels[n:] == IGNORE).all()
        assert labels[len(prompt):n].tolist() == response
        assert (ids[n:] == tok.pad_id).all()
    assert batch["answers"] == ["1", "yes"]


def test_rl_prompts_are_left_padded(tok):
    examples = [example(question="Q?", image=True), example(question="A longer question than the first?")]
    batch = Collator(tok, "rl")(examples)
    assert "labels" not in batch and batch["answers"] == ["3", "3"]
    assert batch["reasonings"] == ["I see 3 shapes.", "I see 3 shapes."]  # what a reasoning reward compares
    assert "reasonings" not in Collator(tok, "rl")([example(reasoning=None)])
    assert batch["attention_mask"][:, -1].all()  # generation continues every row from the last column
    for row, e in enumerate(examples):
        mask = batch["attention_mask"][row]
        modalities = ["image"] if e["pixel_values"] is not None else []
        assert tok.decode(batch["input_ids"][row][mask].tolist()) == format_prompt(e["question"], modalities)
        first = int(mask.float().argmax())
        assert not mask[:first].any() and (batch["input_ids"][row][:first] == tok.pad_id).all()


def test_the_prompts_of_an_sft_batch_are_the_rl_batch_of_the_same_records(tok):
    examples = [example(question="Q?", image=True), example(question="A longer question than the first?",
                                                            reasoning="I see 3 shapes and more words.")]
    sft, rl = Collator(tok, "sft")(examples), Collator(tok, "rl")(examples)
    ids, mask = prompts_of(sft["input_ids"], sft["labels"], sft["attention_mask"], tok.pad_id)
    assert torch.equal(ids, rl["input_ids"]) and torch.equal(mask, rl["attention_mask"])


def test_preference_pairs_share_one_width(tok):
    examples = [example(chosen=format_response("I count 3.", "3"), rejected="<think></think><answer>4</answer>"),
                example(audio=20, chosen=format_response("Long " * 10, "2"), rejected="no")]
    batch = Collator(tok, "preference")(examples)
    assert batch["chosen_input_ids"].shape == batch["rejected_input_ids"].shape
    for side in ("chosen", "rejected"):
        for row, e in enumerate(examples):
            labels = batch[f"{side}_labels"][row]
            text = tok.decode(labels[labels != IGNORE].tolist())
            assert text.endswith("</s>") and text.startswith(e[side])
    assert "input_ids" not in batch


def test_paired_uses_captions_and_no_core_sequence(tok):
    examples = [example(image=True, caption="An image of 1 red circle."), example(audio=30, caption=None, text="beeps")]
    batch = Collator(tok, "paired")(examples)
    assert "input_ids" not in batch and "labels" not in batch
    rows = [tok.decode(ids[mask].tolist(), skip_special_tokens=True) for ids, mask in
            zip(batch["text_ids"], batch["text_mask"])]
    assert rows == ["An image of 1 red circle.", "beeps"]


def test_text_free_record_has_an_all_false_text_row(tok):
    batch = Collator(tok, "paired")([example(image=True, caption="x"), example(audio=5, reasoning=None)])
    assert batch["text_mask"][0].any() and not batch["text_mask"][1].any()


def test_paired_text_is_the_caption_else_the_reasoning(tok):
    """A QA record's reasoning says what it perceives: contrastive alignment reads it when there is no caption."""
    batch = Collator(tok, "paired")([example(image=True, caption="a red circle", reasoning="I see 3 shapes."),
                                     example(image=True, reasoning="The picture shows 7.")])
    for row, text in enumerate(("a red circle", "The picture shows 7.")):
        assert tok.decode(batch["text_ids"][row][batch["text_mask"][row]].tolist(), skip_special_tokens=True) == text


def test_masked_language_modelling(tok):
    torch.manual_seed(0)
    texts = ["How many red shapes are in the image? I count three red circles and two blue squares."] * 8
    examples = [example(text=t, question=None) for t in texts]
    plain = Collator(tok, "masked", mlm_probability=0.0)(examples)
    assert (plain["text_labels"] == IGNORE).all()
    everything = Collator(tok, "masked", mlm_probability=1.0)(examples)
    real = plain["text_mask"] & ~torch.isin(plain["text_ids"], torch.tensor(sorted(tok.special_ids)))
    assert torch.equal(everything["text_labels"] != IGNORE, real)  # every real token, never <s> or </s>
    assert torch.equal(everything["text_labels"][real], plain["text_ids"][real])
    share = (everything["text_ids"][real] == tok.mask_id).float().mean()
    assert 0.7 < share < 0.9


def test_too_long_records_are_an_error_not_cut(tok):
    short = Collator(tok, "sft", max_length=200)([example()])
    assert short["input_ids"].shape[1] < 200
    with pytest.raises(ValueError, match=r"record long: prompt \+ response is \d+ tokens, longer than max_length=40"):
        Collator(tok, "sft", max_length=40)([example(), example(id="long", reasoning="x " * 50)])
    with pytest.raises(ValueError, match="text.max_positions=5"):
        Collator(tok, "rl", text_max_length=5)([example(id="q")])


def test_a_skipped_record_is_dropped_from_its_batch_and_reported(tok):
    marker = {"skipped": ("m.jsonl:3", "image: bad")}
    batch = Collator(tok, "rl")([example(id="a"), marker, example(id=7)])
    assert batch["ids"] == ["a", "7"] and batch["input_ids"].shape[0] == 2  # dropped, nothing in its place
    assert batch["skipped"] == [("m.jsonl:3", "image: bad")]
    assert Collator(tok, "sft")([marker]) == {"skipped": [("m.jsonl:3", "image: bad")]}


def test_encode_checks_one_example_as_the_batch_would(tok):
    collator = Collator(tok, "sft", max_length=40, text_max_length=12)
    rows = collator.encode(example(id="ok", question="How many?", reasoning="one"))
    assert rows["sequence"][0] == collator([example(id="ok", question="How many?", reasoning="one")])[
        "input_ids"][0].tolist()
    with pytest.raises(ValueError, match=r"record q: text encoder input is \d+ tokens, longer than text.max_pos"):
        collator.encode(example(id="q", question="How many shapes are in the whole image?"))
    with pytest.raises(ValueError, match=r"record r: prompt \+ response is \d+ tokens, longer than max_length=40"):
        collator.encode(example(id="r", question="Q?", reasoning="x " * 50))


def test_the_default_core_limit_leaves_room_for_the_largest_prefix():
    from mmr1.config import Config
    from mmr1.datamodules.collate import core_text_limit

    tiny = Config.from_name("tiny")  # 3 modalities, 16 resampler tokens each
    assert core_text_limit(tiny) == tiny.core.max_seq_len - 48
    assert Collator.for_model(tiny, "sft").max_length == tiny.core.max_seq_len - 48
    assert Collator.for_model(tiny, "sft").text_max_length == tiny.text.max_positions


def test_pad():
    ids, mask = pad([[1, 2, 3], [4]], 0, left=True)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[True] * 3, [False, False, True]]
    ids, mask = pad([[4], []], 9)
    assert ids.tolist() == [[4], [9]] and mask.tolist() == [[True], [False]]


def test_sft_class_labels_from_an_index_or_a_choice(tok):
    choices = ["red", "green", "blue"]
    examples = [example(id="a", label=2, choices=choices), example(id="b", label="green", choices=choices),
                example(id="c", label=0)]
    batch = Collator(tok, "sft")(examples)
    assert batch["class_labels"].dtype == torch.long and batch["class_labels"].tolist() == [2, 1, 0]
    assert "class_labels" not in Collator(tok, "sft")([example(), example()])


@pytest.mark.parametrize("fields", [{"label": "purple", "choices": ["red", "green"]},
                                    {"label": 2, "choices": ["red", "green"]},
                                    {"label": -1}, {"label": True}, {"label": None}])
def test_a_label_that_names_no_class_names_the_record(tok, fields):
    with pytest.raises(ValueError, match="record bad: label"):
        Collator(tok, "sft")([example(id="ok", label=0), example(id="bad", **fields)])


def test_no_text_ids_for_a_model_without_a_text_encoder(tok):
    batch = Collator(tok, "sft", encode_text=False)([example()])
    assert "text_ids" not in batch and "input_ids" in batch


def test_paired_hard_negatives_are_tokenised_with_the_row_they_belong_to(tok):
    examples = [example(image=True, caption="a red circle", image_negatives=["a red square", "a blue circle"]),
                example(image=True, caption="a green square"),
                example(image=True, caption="a blue triangle", image_negatives=["a blue circle"])]
    batch = Collator(tok, "paired")(examples)
    texts = [tok.decode(ids[mask].tolist(), skip_special_tokens=True)
             for ids, mask in zip(batch["image_negative_ids"], batch["image_negative_mask"])]
    assert texts == ["a red square", "a blue circle", "a blue circle"]
    assert batch["image_negative_rows"].tolist() == [0, 0, 2]
    assert "audio_negative_ids" not in batch
    assert "image_negative_ids" not in Collator(tok, "sft")(examples)  # only contrastive alignment reads them


def test_paired_medium_captions_and_text_keys(tok):
    """A medium's own caption (image_caption / audio_caption) is that medium's text; a row without one keeps the
    record's paired text. Keys are equal exactly where the texts are."""
    examples = [example(image=True, reasoning="The picture shows 7. The sound says 3.", image_caption="The picture shows 7."),
                example(image=True, reasoning="The picture shows 7. The sound says 4.", image_caption="The picture shows 7."),
                example(image=True, reasoning="The picture shows 2. The sound says 4.")]
    batch = Collator(tok, "paired")(examples)
    texts = [tok.decode(ids[mask].tolist(), skip_special_tokens=True)
             for ids, mask in zip(batch["image_text_ids"], batch["image_text_mask"])]
    assert texts == ["The picture shows 7.", "The picture shows 7.", "The picture shows 2. The sound says 4."]
    assert batch["image_text_keys"].tolist()[0] == batch["image_text_keys"].tolist()[1] != batch["image_text_keys"][2]
    assert len(set(batch["text_keys"].tolist())) == 3  # the records' paired texts all differ
    assert "audio_text_ids" not in batch
    assert "image_text_ids" not in Collator(tok, "sft")(examples)


def test_paired_core_captions_are_in_the_cores_vocabulary_and_templates_keep_their_varying_words(tok):
    """{m}_caption_ids hold each medium's own caption in the core's vocabulary (the text encoder's may differ);
    with caption_templates only the words the template does not fix; a row without a caption is empty, and a
    caption that does not fit its template fails naming it."""
    examples = [example(image=True, image_caption="The picture shows 7.", audio=50, audio_caption="The sound says 3."),
                example(image=True, image_caption="The picture shows 12."),
                example(image=True)]
    collator = Collator(tok, "paired", encode_text=False)
    batch = collator(examples)
    words = [tok.decode(ids[mask].tolist()) for ids, mask in zip(batch["image_caption_ids"], batch["image_caption_mask"])]
    assert words == ["The picture shows 7.", "The picture shows 12.", ""]
    assert batch["audio_caption_mask"].any(1).tolist() == [True, False, False]
    collator.caption_templates = {"image_caption": ("The picture shows ", "."), "audio_caption": ("The sound says ", ".")}
    batch = collator(examples)
    words = [tok.decode(ids[mask].tolist()) for ids, mask in zip(batch["image_caption_ids"], batch["image_caption_mask"])]
    assert words == ["7", "12", ""]
    assert tok.decode(batch["audio_caption_ids"][0][batch["audio_caption_mask"][0]].tolist()) == "3"
    with pytest.raises(ValueError, match="image_caption: 'A cat.' does not fit its template"):
        collator([example(image=True, image_caption="A cat.")])
    assert "image_caption_ids" not in Collator(tok, "sft")(examples)
