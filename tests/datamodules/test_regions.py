"""Regions: a box and the text naming what is in it, checked, moved with the image, and assigned to patches."""

import pytest
import torch
from PIL import Image

from mmr1.config import Config
from mmr1.datamodules.collate import Collator
from mmr1.datamodules.processors import ImageAugment, ImageProcessor
from mmr1.datamodules.records import RecordProcessor, check_record
from mmr1.datamodules.regions import BACKGROUND, SHARED, patch_regions
from mmr1.datamodules.synth import Synth, render_image


@pytest.mark.parametrize("regions, message", [
    ({"box": [0, 0, 1, 1], "text": "a"}, "expected a list"),
    ([{"box": [0, 0, 1, 1]}], r"regions\[0\]: expected an object"),
    ([{"box": [0, 0, 1], "text": "a"}], r"regions\[0\].box: expected \[x0, y0, x1, y1\]"),
    ([{"box": [4, 0, 2, 3], "text": "a"}], r"regions\[0\].box: expected 0 <= x0 < x1"),
    ([{"box": [0, 0, 2, 3], "text": " "}], r"regions\[0\].text"),
    ([{"box": [0, 0, 2, True], "text": "a"}], r"regions\[0\].box"),
])
def test_bad_regions_are_refused_by_name(regions, message):
    with pytest.raises(ValueError, match=message):
        check_record({"image": "a.png", "caption": "c", "regions": regions}, "paired")


def test_regions_need_an_image():
    with pytest.raises(ValueError, match="needs the image"):
        check_record({"caption": "c", "regions": [{"box": [0, 0, 1, 1], "text": "a"}]}, "paired")


def test_boxes_follow_the_image_through_resize_and_flip_and_must_lie_inside_it():
    config = Config.from_name("tiny").vision  # 32-pixel input
    pixels, boxes = ImageProcessor(config)(Image.new("RGB", (64, 48)), torch.tensor([[0.0, 0.0, 32.0, 24.0]]))
    assert pixels.shape == (3, 32, 32)
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    flip = ImageProcessor(config, train=True, augment=ImageAugment(brightness=0, contrast=0, hflip=True))
    seen = {tuple(flip(Image.new("RGB", (32, 32)), torch.tensor([[0.0, 0.0, 8.0, 8.0]]))[1][0].tolist())
            for _ in range(30)}
    assert seen == {(0.0, 0.0, 8.0, 8.0), (24.0, 0.0, 32.0, 8.0)}
    with pytest.raises(ValueError, match=r"regions\[0\].box.*past the 32x32 image"):
        ImageProcessor(config)(Image.new("RGB", (32, 32)), torch.tensor([[0.0, 0.0, 33.0, 8.0]]))


def test_each_region_is_the_patch_its_centre_falls_in_and_a_patch_of_two_centres_is_neither_s():
    boxes = torch.tensor([[0.0, 0.0, 14.0, 14.0],  # centre (7, 7): patch 0, though it straddles 4 patches
                          [8.0, 0.0, 9.0, 8.0],  # centre (8.5, 4): patch 1, however little of it the box covers
                          [17.0, 17.0, 22.0, 22.0],  # centre (19.5, 19.5): patch 10, shared with the next
                          [18.0, 20.0, 23.0, 23.0],
                          [28.0, 28.0, 32.0, 32.0]])  # image 1: centre (30, 30), patch 15
    rows = torch.tensor([0, 0, 0, 0, 1])
    owner = patch_regions(boxes, rows, 2, (4, 4), 8)
    want = torch.full((2, 16), BACKGROUND)
    want[0, 0], want[0, 1], want[0, 10], want[1, 15] = 0, 1, SHARED, 4
    torch.testing.assert_close(owner, want)


def test_built_in_records_carry_their_shapes_as_regions_and_batches_carry_their_distinct_texts():
    config = Config.from_name("tiny")
    spec = Synth(seed=1, split="train", difficulty=3).spec(0)
    record = Synth(seed=1, split="train", difficulty=3).record(0)
    assert [r["text"] for r in record["regions"]] == [f"a {s.colour} {s.kind}" for s in spec.shapes]
    image = render_image(spec.shapes, 32)
    for region in record["regions"]:  # each box is the shape's drawn extent
        x0, y0, x1, y1 = region["box"]
        assert image.crop((x0, y0, x1, y1)).getbbox() == (0, 0, x1 - x0, y1 - y0)
    processor, collate = RecordProcessor.from_config(config), Collator.for_model(config, "paired")
    examples = [processor(Synth(seed=1, split="train", difficulty=3).record(i)) for i in range(4)]
    batch = collate(examples)
    n = sum(len(e["regions"][1]) for e in examples)
    rows = batch["region_rows"].tolist()
    assert batch["region_boxes"].shape == (n, 4) and rows == sorted(rows)
    texts = [t for e in examples for t in e["regions"][1]]
    assert batch["region_text_ids"].shape[0] == len(set(texts)) and batch["region_images"].all()
    decoded = [collate.text_tokenizer.decode(batch["region_text_ids"][i][batch["region_text_mask"][i]].tolist(),
                                             skip_special_tokens=True) for i in batch["region_text_index"].tolist()]
    assert [d.strip() for d in decoded] == texts
