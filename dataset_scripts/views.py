"""The views of a built benchmark split that training and evaluation use.

A split has one row per image with all its captions. Training wants one example per (image, caption) pair;
evaluation wants every caption as a query with its person id, and every image once as the gallery. None of these
views copies or decodes images: they are index or column selections over the split's Arrow table.
"""

from __future__ import annotations

import datasets
import torch


def _caption_pairs(split_ds: datasets.Dataset) -> tuple[list[int], list[str], list[int], list[list[str]]]:
    """(row, caption, person_id, attributes) per caption, in row order then caption order; images are not read."""
    text_columns = split_ds.select_columns(["person_id", "captions", "attributes"]).with_format("arrow")[:]
    rows, captions, person_ids, attributes = [], [], [], []
    for row, (person_id, row_captions, row_attributes) in enumerate(
        zip(
            text_columns["person_id"].to_pylist(),
            text_columns["captions"].to_pylist(),
            text_columns["attributes"].to_pylist(),
            strict=True,
        )
    ):
        for caption in row_captions:
            rows.append(row)
            captions.append(caption)
            person_ids.append(person_id)
            attributes.append(row_attributes)
    return rows, captions, person_ids, attributes


class _AddImageFromSplit:
    """Format transform that looks the `image` of each pair up in the split by its `row` (decoded on access only)."""

    def __init__(self, split_ds: datasets.Dataset):
        self.images = split_ds.select_columns(["image"])

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        batch["image"] = self.images[batch["row"]]["image"]
        return batch


def training_pairs(split_ds: datasets.Dataset) -> datasets.Dataset:
    """One example per caption: `image`, `person_id`, `caption`, `attributes` and `row`.

    The returned dataset stores only the text columns and `row` (an index into `split_ds`); a format transform adds
    the `image` when examples are accessed (`pairs[i]`, `pairs[i:j]`, a DataLoader over it), so building the view never
    copies or decodes image bytes. `column_names` therefore lists `row`, `person_id`, `caption`, `attributes`.
    """
    rows, captions, person_ids, attributes = _caption_pairs(split_ds)
    features = datasets.Features(
        {
            "row": datasets.Value("int64"),
            "person_id": datasets.Value("int64"),
            "caption": datasets.Value("string"),
            "attributes": datasets.List(datasets.Value("string")),
        }
    )
    pairs = datasets.Dataset.from_dict(
        {"row": rows, "person_id": person_ids, "caption": captions, "attributes": attributes}, features=features
    )
    return pairs.with_transform(_AddImageFromSplit(split_ds))


def queries(split_ds: datasets.Dataset) -> tuple[list[str], torch.LongTensor]:
    """Every caption of the split as a query, with its person id (row order, then caption order)."""
    _, captions, person_ids, _ = _caption_pairs(split_ds)
    return captions, torch.tensor(person_ids, dtype=torch.long)


def gallery(split_ds: datasets.Dataset) -> datasets.Dataset:
    """Every image of the split once, with `person_id` and `image_path` (a column selection, no copy)."""
    return split_ds.select_columns(["image", "person_id", "image_path"])
