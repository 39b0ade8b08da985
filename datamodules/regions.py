"""Regions of an image: a box and the text that names what is inside it (a grounded caption, as in Visual
Genome's region descriptions or Kosmos-2's grounded phrases).

A record may carry `regions`: [{"box": [x0, y0, x1, y1], "text": "a red circle"}, ...], the box in the image's
own pixels (x1, y1 exclusive). `ContrastiveModule(regions=w)` aligns each patch token that one region covers
with that region's text (README: "The R1 recipe"); `patch_regions` is the one rule for which patch that is.
"""

from __future__ import annotations

from typing import Optional

import torch

MIN_COVER = 0.375  # share of a patch's area one box must cover for the patch to be that region's (24 of 8×8)


def check_regions(regions: object, has_image: bool) -> None:
    """ValueError('regions...: reason') unless `regions` is None or a list of {"box": [x0, y0, x1, y1],
    "text": non-empty string} with x0 < x1, y0 < y1, all >= 0, on a record with an image."""
    if regions is None:
        return
    if not isinstance(regions, list):
        raise ValueError(f"regions: expected a list of {{'box', 'text'}} objects, got {type(regions).__name__}")
    if regions and not has_image:
        raise ValueError("regions: a record with regions needs the image they are boxes of")
    for i, region in enumerate(regions):
        if not isinstance(region, dict) or set(region) != {"box", "text"}:
            raise ValueError(f"regions[{i}]: expected an object with exactly 'box' and 'text', got {region!r}")
        box, text = region["box"], region["text"]
        if not (isinstance(text, str) and text.strip()):
            raise ValueError(f"regions[{i}].text: expected a non-empty string, got {text!r}")
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise ValueError(f"regions[{i}].box: expected [x0, y0, x1, y1] (4 numbers), got {box!r}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise ValueError(f"regions[{i}].box: expected 0 <= x0 < x1 and 0 <= y0 < y1 in pixels, got {box}")


def check_inside(boxes: torch.Tensor, width: int, height: int) -> None:
    """ValueError unless every box [R, 4] (x0, y0, x1, y1) lies inside a width × height image."""
    outside = (boxes[:, 2] > width) | (boxes[:, 3] > height)  # [R]
    if outside.any():
        i = int(outside.nonzero()[0])
        raise ValueError(f"regions[{i}].box: {boxes[i].tolist()} reaches past the {width}x{height} image")


def patch_regions(boxes: torch.Tensor, rows: torch.Tensor, batch: int, grid: tuple[int, int], patch: int,
                  min_cover: float = MIN_COVER) -> torch.Tensor:
    """The region each patch belongs to: [batch, rows·columns] (row-major) of indices into boxes, or -1.

    boxes [R, 4] (x0, y0, x1, y1) in the encoder's input pixels; rows [R] the image each box is in. A patch is
    region r's when r's box is the only box of that image to overlap it and covers at least `min_cover` of its
    area; a patch two boxes share, or one a box barely grazes, belongs to none.
    """
    n_rows, n_columns = grid
    top = torch.arange(n_rows, device=boxes.device).repeat_interleave(n_columns) * patch  # [P]
    left = torch.arange(n_columns, device=boxes.device).repeat(n_rows) * patch  # [P]
    boxes = boxes.float()
    dx = (torch.minimum(left[None] + patch, boxes[:, 2:3]) - torch.maximum(left[None], boxes[:, 0:1])).clamp(min=0)
    dy = (torch.minimum(top[None] + patch, boxes[:, 3:4]) - torch.maximum(top[None], boxes[:, 1:2])).clamp(min=0)
    area = dx * dy  # [R, P]: pixels of each patch each box covers
    touching = torch.zeros(batch, area.shape[1], device=boxes.device).index_add_(0, rows, (area > 0).float())
    owns = (area >= min_cover * patch * patch) & (touching[rows] == 1)  # [R, P]
    out = torch.full((batch, area.shape[1]), -1, dtype=torch.long, device=boxes.device)
    region, place = owns.nonzero(as_tuple=True)
    out[rows[region], place] = region
    return out


def region_texts(examples: list[dict]) -> Optional[tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(distinct texts [U], boxes [R, 4], rows [R], text index [R] into the distinct texts) of a batch's
    examples' `regions` ((boxes [r, 4], texts) in the encoder's input pixels); None when no example has any."""
    texts: list[str] = []
    boxes, rows, index = [], [], []
    for row, example in enumerate(examples):
        if example.get("regions") is None:
            continue
        example_boxes, example_texts = example["regions"]
        for box, text in zip(example_boxes, example_texts):
            if text not in texts:
                texts.append(text)
            boxes.append(box)
            rows.append(row)
            index.append(texts.index(text))
    if not boxes:
        return None
    return texts, torch.stack(boxes).float(), torch.tensor(rows), torch.tensor(index)
