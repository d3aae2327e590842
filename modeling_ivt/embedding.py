"""Embedding captions and gallery images with an IVT or IRRA-family model, on one process or sharded over several.

Gallery search (`ivt_search`) and evaluation embed with these. With an `accelerate.Accelerator`, every process embeds
its share of the batches and `gather_for_metrics` hands every process the full matrices in the original order (the
padding that evens out the last batch is dropped). Without one, a plain loop runs on the model's device. Embeddings are computed without autocast whatever the training precision (an fp32
model evaluates in fp32, as the released evaluation does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import datasets
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


class _ImageList(torch.utils.data.Dataset):
    """The images of a `datasets.Dataset` "image" column or of a list of PIL images, decoded one at a time."""

    def __init__(self, images: datasets.Dataset | Sequence[Image.Image]):
        if isinstance(images, datasets.Dataset):
            if "image" not in images.column_names:
                raise ValueError(f"the images dataset needs an 'image' column; it has {images.column_names}")
            images = images.select_columns(["image"])
        elif not all(isinstance(image, Image.Image) for image in images):
            raise TypeError("images must be a datasets.Dataset with an 'image' column or a list of PIL images")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Image.Image:
        item = self.images[index]
        return item["image"] if isinstance(item, dict) else item


def _embed(
    model,
    items: torch.utils.data.Dataset | list,
    collate: Callable[[list], dict],
    encode: Callable[[torch.nn.Module, dict], torch.Tensor],
    batch_size: int,
    accelerator,
    description: str,
) -> torch.Tensor:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(items) == 0:
        raise ValueError(f"nothing to embed: {description} is empty")
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, collate_fn=collate)
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
        model = accelerator.unwrap_model(model)
        device, show = accelerator.device, accelerator.is_local_main_process
    else:
        device, show = model.device, True
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            for batch in tqdm(loader, desc=f"Embedding {description}", unit="batch", disable=not show):
                batch = {name: value.to(device) for name, value in batch.items()}
                embeds = torch.nn.functional.normalize(encode(model, batch).float(), dim=-1)
                if accelerator is not None:
                    embeds = accelerator.gather_for_metrics(embeds)
                chunks.append(embeds.cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def embed_captions(
    model, processor, captions: Sequence[str], *, batch_size: int = 64, accelerator=None
) -> torch.Tensor:
    """L2-normalised float32 text embeddings (len(captions), hidden_size) on the CPU, in the order of `captions`."""
    captions = list(captions)
    if not all(isinstance(caption, str) for caption in captions):
        raise TypeError("captions must be a list of strings")
    return _embed(
        model,
        captions,
        lambda texts: dict(processor(text=texts)),
        lambda model, batch: model.get_text_features(**batch).pooler_output,
        batch_size,
        accelerator,
        "captions",
    )


def embed_images(
    model, processor, images: datasets.Dataset | Sequence[Image.Image], *, batch_size: int = 64, accelerator=None
) -> torch.Tensor:
    """L2-normalised float32 image embeddings (len(images), hidden_size) on the CPU, in the order of `images`."""
    return _embed(
        model,
        _ImageList(images),
        lambda pictures: dict(processor(images=pictures)),
        lambda model, batch: model.get_image_features(**batch).pooler_output,
        batch_size,
        accelerator,
        "images",
    )


__all__ = ["embed_captions", "embed_images"]
