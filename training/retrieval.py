"""Text-to-image retrieval metrics of a model on a split of a built benchmark (the field's protocol), on one process or
sharded over several (see `modeling_ivt.embedding`)."""

from __future__ import annotations

import datasets
import torch

from dataset_scripts import views
from modeling_ivt.embedding import embed_captions, embed_images

from .metrics import retrieval_metrics


def evaluate_split(
    model, processor, split_ds: datasets.Dataset, *, batch_size: int = 64, accelerator=None
) -> dict[str, float]:
    """Text-to-image retrieval metrics on a built benchmark split: every caption a query, every image the gallery."""
    captions, query_person_ids = views.queries(split_ds)
    gallery_ds = views.gallery(split_ds)
    gallery_person_ids = torch.tensor(gallery_ds["person_id"], dtype=torch.long)
    query_embeds = embed_captions(model, processor, captions, batch_size=batch_size, accelerator=accelerator)
    gallery_embeds = embed_images(model, processor, gallery_ds, batch_size=batch_size, accelerator=accelerator)
    return retrieval_metrics(query_embeds, gallery_embeds, query_person_ids, gallery_person_ids)


__all__ = ["evaluate_split"]
