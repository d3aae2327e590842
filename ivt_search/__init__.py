"""Search a gallery of pedestrian photos with text descriptions, using a trained IVT or IRRA-family model."""

from .index import GalleryIndex, ModelMismatchError, SearchHit, model_fingerprint, read_index_metadata
from .picture import RankedQuery, render_ranked_results

__all__ = [
    "GalleryIndex",
    "ModelMismatchError",
    "RankedQuery",
    "SearchHit",
    "model_fingerprint",
    "read_index_metadata",
    "render_ranked_results",
]
