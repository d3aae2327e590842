"""Search a gallery of pedestrian photos with text descriptions, using a trained IVT or IRRA-family model."""

from .index import (
    AddReport,
    GalleryIndex,
    ModelMismatchError,
    SearchHit,
    SkippedImage,
    model_fingerprint,
    read_index_metadata,
)
from .picture import RankedQuery, render_ranked_results

__all__ = [
    "AddReport",
    "GalleryIndex",
    "ModelMismatchError",
    "RankedQuery",
    "SearchHit",
    "SkippedImage",
    "model_fingerprint",
    "read_index_metadata",
    "render_ranked_results",
]
