"""Regions of an image: a box and the text that names what is inside it (a grounded caption, as in Visual
Genome's region descriptions or Kosmos-2's grounded phrases).

A record may carry `regions`: [{"box": [x0, y0, x1, y1], "text": "a red circle"}, ...], the box in the image's
own pixels (x1, y1 exclusive). `ContrastiveModule(regions=w)` aligns the patch token at each region's centre
with that region's text, and every other token of the image with "no region" (README: "The R1 recipe");
`patch_regions` is the one rule for which token stands for which region.
"""

from __future__ import annotations

from typing import Optional

import torch



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


BACKGROUND, SHARED = -1, -2  # `patch_regions` for a patch that holds no region's centre, or two regions' centres


def patch_regions(boxes: torch.Tensor, rows: torch.Tensor, batch: int, grid: tuple[int, int],
                  patch: int) -> torch.Tensor:
    """The region each patch token stands for: [batch, rows·columns] (row-major) of indices into boxes,
    BACKGROUND or SHARED.

    boxes [R, 4] (x0, y0, x1, y1) in the encoder's input pixels; rows [R] the image each box is in. A region
    is the patch its box's centre falls in (CenterNet's one location per object), so each shape a scene
    shows is one token, whatever patches it straddles; a patch holding two centres stands for neither.
    """
    n_rows, n_columns = grid
    centre = (boxes[:, :2] + boxes[:, 2:]).float() / 2  # [R, 2]: x, y
    column = (centre[:, 0] // patch).long().clamp(0, n_columns - 1)  # [R]
    row = (centre[:, 1] // patch).long().clamp(0, n_rows - 1)  # [R]
    place = rows * n_rows * n_columns + row * n_columns + column  # [R]: flat index into [batch, P]
    out = torch.full((batch * n_rows * n_columns,), BACKGROUND, dtype=torch.long, device=boxes.device)
    count = torch.zeros_like(out).index_add_(0, place, torch.ones_like(place))
    out[place] = torch.arange(len(boxes), device=boxes.device)
    out[count > 1] = SHARED
    return out.view(batch, n_rows * n_columns)


def region_texts(examples: list[dict]) -> Optional[tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor,
                                                         torch.Tensor]]:
    """(distinct texts [U], boxes [R, 4], rows [R], text index [R] into the distinct texts, labelled [B]: the
    examples with `regions`, an empty list included) of a batch's examples' `regions` ((boxes [r, 4], texts) in
    the encoder's input pixels); None when no example has any."""
    texts: list[str] = []
    boxes, rows, index = [], [], []
    labelled = torch.tensor([example.get("regions") is not None for example in examples])
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
    if not labelled.any():
        return None
    boxes = torch.stack(boxes).float() if boxes else torch.zeros(0, 4)
    return texts, boxes, torch.tensor(rows, dtype=torch.long), torch.tensor(index, dtype=torch.long), labelled
