"""A saved, searchable gallery: image embeddings (IVT or IRRA-family) of a folder of photos or of a benchmark split.

An index is a folder holding two files, written to a temporary folder that is renamed into place:

- `embeddings.safetensors`: one tensor `image_embeds`, float32, shape (num_images, embedding_dim), L2-normalised;
- `index.json`: `format` ("ivt-gallery-index"), `version` (1), `embedding_dim`, `num_images`, `model`
  (`name_or_path`, `model_type` ("ivt" or "irra"; absent in indexes of older versions, which were all IVT) and
  `fingerprint`, a SHA-256 of the model type, the weights and the processor settings), `sources` (each a
  `{"type": "folder", "root": ...}` or a `{"type": "dataset", "path": ..., "split": ...}`, the folder written
  relative to the index folder, so that an index moves together with its gallery, e.g. into a Space), and `images`,
  one per embedding row, in order: `source` (position in `sources`), `path` (relative to the folder, or the split's
  `image_path`), `person_id` (an int, or null when unknown) and, for dataset rows, `row`.

Captions are only comparable with image embeddings of the same weights, so an index refuses a model whose
fingerprint differs from the one it was built with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from modeling_ivt.embedding import embed_captions, embed_images
from modeling_ivt.image_utils import ImageTooLargeError, check_image_file, open_image
from modeling_ivt.loading import embedding_dim
from modeling_ivt.safe_io import PathOutsideRootError, atomic_output, recover_replaced, resolve_inside

logger = logging.getLogger(__name__)

INDEX_FORMAT = "ivt-gallery-index"
INDEX_VERSION = 1
EMBEDDINGS_FILE = "embeddings.safetensors"
INDEX_FILE = "index.json"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class SkippedImage:
    """A gallery file that could not be read as an image, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class AddReport:
    """What one `add_folder` / `add_split` did: images embedded, images the index already held, files skipped."""

    added: int
    already_indexed: int
    skipped: tuple[SkippedImage, ...]


class ModelMismatchError(ValueError):
    """The index was built with other weights or processor settings than the model it is used with."""


@dataclass(frozen=True)
class SearchHit:
    """One ranked gallery image for a query. `position` is its row in the index (for `GalleryIndex.load_image`)."""

    rank: int
    score: float
    path: str
    person_id: int | None
    position: int


def model_fingerprint(model, processor) -> str:
    """
    SHA-256 of the model type, of every weight (name, shape, bytes) and of the settings that turn inputs into
    tensors. Floating weights are hashed at bfloat16 precision, so that one checkpoint loaded in float32 or with bfloat16 weights matches
    (their embeddings agree to about 0.1%) while any trained difference shows.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.bfloat16)
        tensor = tensor.contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    image_processor = processor.image_processor
    settings = {
        "model_type": model.config.model_type,
        "size": dict(image_processor.size),
        "resample": int(image_processor.resample),
        "image_mean": list(image_processor.image_mean),
        "image_std": list(image_processor.image_std),
        "do_normalize": image_processor.do_normalize,
        "do_rescale": image_processor.do_rescale,
        "max_length": getattr(processor, "max_length", None),
        "do_lower_case": getattr(processor.tokenizer, "do_lower_case", None),
        "vocab": hashlib.sha256(json.dumps(sorted(processor.tokenizer.get_vocab().items())).encode()).hexdigest(),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder`, recursively, by suffix, in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"image folder {folder} does not exist or is not a folder")
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def _skip(path: Path, error: ValueError, strict: bool, skipped: list) -> None:
    if strict:
        raise ValueError(f"{error} (fix or remove it; without --strict unreadable files are skipped)") from None
    skipped.append(SkippedImage(str(path), str(error).removeprefix(f"image {path} ")))


def _image_files(files: list[Path]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"image": [str(path) for path in files]}).cast_column(
        "image", datasets.Image(mode="RGB")
    )


def _person_id_from_folder(path: Path) -> int:
    try:
        return int(path.parent.name)
    except ValueError:
        raise ValueError(
            f"person_id_from_folder: the folder of {path} is {path.parent.name!r}, not an integer person id"
        ) from None


def _load_split(dataset_path: str | os.PathLike, split: str | None) -> datasets.Dataset:
    loaded = datasets.load_from_disk(str(dataset_path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(
                f"dataset {dataset_path} has splits {sorted(loaded)}; choose one with split= (got {split!r})"
            )
        loaded = loaded[split]
    missing = {"image", "image_path"} - set(loaded.column_names)
    if missing:
        raise ValueError(f"dataset {dataset_path} split {split!r} lacks the column(s) {sorted(missing)}")
    return loaded


class GalleryIndex:
    r"""
    Gallery image embeddings of one model (IVT or IRRA-family), with where each image came from, searchable by captions.

    Args:
        model ([`IVTModel`] or [`IRRAModel`]): the model that embeds the gallery and the queries (used in eval mode).
        processor ([`IVTProcessor`] or [`IRRAProcessor`]): its processor.
        batch_size (`int`, *optional*, defaults to 32): images or captions per forward pass.
        max_image_pixels (`int`, *optional*): refuse image files with more pixels, read from their header before
            decoding (default `modeling_ivt.image_utils.MAX_IMAGE_PIXELS`; 0 for no limit).

    The embeddings are float32 whatever the model's dtype; a model loaded with bfloat16 weights
    (`modeling_ivt.loading.load_model_and_processor(..., bf16=True)`) embeds about 3x faster on bf16 hardware.
    """

    def __init__(self, model, processor, batch_size: int = 32, max_image_pixels: int | None = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.max_image_pixels = max_image_pixels
        self.fingerprint = model_fingerprint(model, processor)
        self.image_embeds = torch.empty(0, embedding_dim(model.config))
        self.sources: list[dict] = []
        self.images: list[dict] = []
        self._datasets: dict[int, datasets.Dataset] = {}
        self._faiss_index = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def model_name(self) -> str:
        return str(self.model.name_or_path or type(self.model).__name__)

    # Embedding

    def _embed_images(self, images: datasets.Dataset) -> torch.Tensor:
        if len(images) == 0:
            return torch.empty(0, self.image_embeds.shape[1])
        return embed_images(self.model, self.processor, images, batch_size=self.batch_size)

    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        """(len(captions), dim) L2-normalised float32 text embeddings on the CPU."""
        return embed_captions(self.model, self.processor, captions, batch_size=self.batch_size)

    def _append(self, source: dict, new_images: list[dict], embeds: torch.Tensor) -> None:
        if not new_images:
            return
        if source in self.sources:
            source_id = self.sources.index(source)
        else:
            self.sources.append(source)
            source_id = len(self.sources) - 1
        for image in new_images:
            image["source"] = source_id
        self.images.extend(new_images)
        self.image_embeds = torch.cat([self.image_embeds, embeds])
        self._faiss_index = None

    def _indexed(self, source: dict, key: str) -> list:
        """`key` ("path" or "row") of every image already indexed from `source`."""
        if source not in self.sources:
            return []
        source_id = self.sources.index(source)
        return [image[key] for image in self.images if image["source"] == source_id]

    # Adding images

    def add_folder(self, folder: str | os.PathLike, person_id_from_folder: bool = False, strict: bool = False):
        """
        Embed every image under `folder` (recursively) that the index does not hold yet; returns an `AddReport`.
        A file that cannot be read as an image is skipped and listed in the report (`strict=True` raises a
        `ValueError` naming it instead). With `person_id_from_folder`, each image's person id is the integer name of
        the folder it is in (the layout `<person_id>/<image>` of most re-identification datasets), which colours the
        ranked-result pictures.
        """
        folder = Path(folder).resolve()
        source = {"type": "folder", "root": str(folder)}
        known = set(self._indexed(source, "path"))
        found = find_images(folder)
        if not found:
            raise ValueError(f"image folder {folder} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        files = [path for path in found if path.relative_to(folder).as_posix() not in known]
        person_ids = [_person_id_from_folder(path) if person_id_from_folder else None for path in files]
        embeds, skipped = self._embed_files(files, strict)
        skipped_paths = {image.path for image in skipped}
        new_images = [
            {"path": path.relative_to(folder).as_posix(), "person_id": person_id}
            for path, person_id in zip(files, person_ids, strict=True)
            if str(path) not in skipped_paths
        ]
        self._append(source, new_images, embeds)
        logger.info(
            "added %d images from %s (%d already indexed, %d unreadable)",
            len(new_images),
            folder,
            len(known),
            len(skipped),
        )
        return AddReport(added=len(new_images), already_indexed=len(found) - len(files), skipped=tuple(skipped))

    def _embed_files(self, files: list[Path], strict: bool) -> tuple[torch.Tensor, list[SkippedImage]]:
        """Embeddings of the readable `files`, and the unreadable ones. Only headers are read first, so that an image
        over the pixel limit is never decoded; files are only opened one by one (to find the culprits) when decoding the
        batch fails, so a clean gallery is decoded once."""
        small, skipped = [], []
        for path in files:
            try:
                check_image_file(path, self.max_image_pixels)
                small.append(path)
            except ImageTooLargeError as error:
                _skip(path, error, strict, skipped)
        try:
            return self._embed_images(_image_files(small)), skipped
        except (OSError, SyntaxError, ValueError) as error:
            batch_error = error
        too_large, readable = len(skipped), []
        for path in small:
            try:
                open_image(path, self.max_image_pixels)
                readable.append(path)
            except ValueError as error:
                _skip(path, error, strict, skipped)
        if len(skipped) == too_large:
            raise batch_error
        return self._embed_images(_image_files(readable)), skipped

    def add_split(self, dataset_path: str | os.PathLike, split: str | None = "test"):
        """
        Embed the images of one split of a benchmark built by `dataset_scripts` (`datasets.load_from_disk` folder),
        with their person ids; rows already in the index are skipped. Returns an `AddReport`.
        """
        dataset_path = Path(dataset_path).resolve()
        split_ds = _load_split(dataset_path, split)
        source = {"type": "dataset", "path": str(dataset_path), "split": split}
        known_rows = set(self._indexed(source, "row"))
        columns = split_ds.select_columns(["image_path", "person_id"]).with_format("arrow")[:]
        rows = [row for row in range(len(split_ds)) if row not in known_rows]
        image_paths = columns["image_path"].to_pylist()
        person_ids = columns["person_id"].to_pylist()
        new_images = [{"path": image_paths[row], "person_id": person_ids[row], "row": row} for row in rows]
        embeds = self._embed_images(split_ds.select_columns(["image"]).select(rows))
        self._append(source, new_images, embeds)
        logger.info("added %d images of %s split %s", len(rows), dataset_path, split)
        return AddReport(added=len(rows), already_indexed=len(split_ds) - len(rows), skipped=())

    # Reading images back

    def image_location(self, position: int) -> str:
        """Where the image at `position` lives: a file path, or `dataset_path[split]/image_path` for a split row."""
        image = self.images[position]
        source = self.sources[image["source"]]
        if source["type"] == "folder":
            return str(Path(source["root"]) / image["path"])
        return f"{source['path']}[{source['split']}]/{image['path']}"

    def load_image(self, position: int) -> Image.Image:
        """The gallery image at `position`, as RGB."""
        image = self.images[position]
        source_id = image["source"]
        source = self.sources[source_id]
        if source["type"] == "folder":
            return open_image(resolve_inside(source["root"], image["path"], what="image path"), self.max_image_pixels)
        if source_id not in self._datasets:
            self._datasets[source_id] = _load_split(source["path"], source["split"]).select_columns(["image"])
        if image["row"] >= len(self._datasets[source_id]):
            raise ValueError(
                f"index image {position} is row {image['row']} of {source['path']} split {source['split']!r}, which "
                f"has {len(self._datasets[source_id])} rows: the dataset changed since it was indexed"
            )
        return self._datasets[source_id][image["row"]]["image"].convert("RGB")

    # Search

    def search(self, captions: str | list[str], top_k: int = 10, method: str = "exact") -> list[list[SearchHit]]:
        """
        The `top_k` best gallery images for each caption, best first. `method="exact"` scores every image (a matrix
        product, chunked over queries); `method="faiss"` asks an HNSW graph built on first use (needs faiss-cpu:
        `pip install "ivt-hf[faiss]"`), faster on huge galleries at the cost of recall (see bench/search_bench.py).
        """
        if isinstance(captions, str):
            captions = [captions]
        if not captions:
            raise ValueError("search needs at least one caption")
        for number, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"query {number + 1} is empty: describe the person to find, e.g. 'a man in a red coat'")
        if len(self) == 0:
            raise ValueError("the index holds no images yet: add a folder or a dataset split first")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        top_k = min(top_k, len(self))
        text_embeds = self.embed_captions(list(captions))
        if method == "exact":
            scores, positions = exact_top_k(text_embeds, self.image_embeds, top_k)
        elif method == "faiss":
            scores, positions = self._faiss_top_k(text_embeds, top_k)
        else:
            raise ValueError(f"method must be 'exact' or 'faiss', got {method!r}")
        return [
            [
                SearchHit(
                    rank=rank + 1,
                    score=float(score),
                    path=self.image_location(int(position)),
                    person_id=self.images[int(position)]["person_id"],
                    position=int(position),
                )
                for rank, (score, position) in enumerate(zip(row_scores.tolist(), row_positions.tolist(), strict=True))
            ]
            for row_scores, row_positions in zip(scores, positions, strict=True)
        ]

    def _faiss_top_k(self, text_embeds: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._faiss_index is None:
            self._faiss_index = build_faiss_index(self.image_embeds)
        scores, positions = self._faiss_index.search_batch(text_embeds.numpy(), k=top_k)
        return torch.from_numpy(scores), torch.from_numpy(positions)

    # Saving and opening

    def save(self, index_dir: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the index folder atomically (a complete temporary folder renamed to `index_dir`)."""
        index_dir = Path(index_dir)
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "embedding_dim": int(self.image_embeds.shape[1]),
            "num_images": len(self.images),
            "model": {
                "name_or_path": self.model_name,
                "model_type": self.model.config.model_type,
                "fingerprint": self.fingerprint,
            },
            "sources": [
                _relocate(source, lambda path: os.path.relpath(path, index_dir.resolve())) for source in self.sources
            ],
            "images": self.images,
        }
        if index_dir.exists() and not overwrite:
            raise FileExistsError(f"{index_dir} exists; pass overwrite=True (--overwrite) to replace it")
        with atomic_output(index_dir, directory=True) as staging:
            save_file({"image_embeds": self.image_embeds.contiguous()}, str(staging / EMBEDDINGS_FILE))
            (staging / INDEX_FILE).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
        return index_dir

    @classmethod
    def open(
        cls, index_dir: str | os.PathLike, model, processor, batch_size: int = 32, max_image_pixels: int | None = None
    ):
        """Reopen a saved index for `model`; raises `ModelMismatchError` if it was built with another model."""
        index_dir = Path(index_dir)
        metadata = read_index_metadata(index_dir)
        index = cls(model, processor, batch_size=batch_size, max_image_pixels=max_image_pixels)
        built_with = metadata["model"]
        if built_with["fingerprint"] != index.fingerprint:
            raise ModelMismatchError(
                f"index {index_dir} was built with model {built_with['name_or_path']!r} "
                f"({built_with.get('model_type', 'ivt')}, fingerprint {built_with['fingerprint'][:12]}), but the model "
                f"given is {index.model_name!r} ({model.config.model_type}, fingerprint {index.fingerprint[:12]}): "
                f"their embeddings are not comparable. Query with the model the index was "
                f"built with, or build a new index with this one."
            )
        embeddings_file = index_dir / EMBEDDINGS_FILE
        try:
            image_embeds = load_file(str(embeddings_file))["image_embeds"]
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{embeddings_file} is not a readable safetensors file: {error}") from None
        except KeyError:
            raise ValueError(f"{embeddings_file} holds no 'image_embeds' tensor") from None
        if tuple(image_embeds.shape) != (metadata["num_images"], metadata["embedding_dim"]):
            raise ValueError(
                f"{index_dir / EMBEDDINGS_FILE} holds {tuple(image_embeds.shape)} embeddings but {INDEX_FILE} lists "
                f"{metadata['num_images']} images of dimension {metadata['embedding_dim']}"
            )
        index.image_embeds = image_embeds.float()
        index.sources = [
            _relocate(source, lambda path: str((index_dir / path).resolve())) for source in metadata["sources"]
        ]
        index.images = metadata["images"]
        for position, image in enumerate(index.images):
            source = index.sources[image["source"]]
            if source["type"] == "folder":
                try:
                    resolve_inside(source["root"], image["path"], what="image path")
                except PathOutsideRootError as error:
                    raise PathOutsideRootError(f"{index_dir / INDEX_FILE} image {position}: {error}") from None
        return index


def _relocate(source: dict, convert) -> dict:
    """`source` with its folder (`root` or `path`) passed through `convert`."""
    key = "root" if source["type"] == "folder" else "path"
    return {**source, key: convert(source[key])}


def read_index_metadata(index_dir: str | os.PathLike) -> dict:
    """The parsed `index.json` of an index folder, checked for format and version."""
    index_dir = Path(index_dir)
    recover_replaced(index_dir)
    index_file = index_dir / INDEX_FILE
    if not index_file.is_file() or not (index_dir / EMBEDDINGS_FILE).is_file():
        raise FileNotFoundError(f"{index_dir} is not a gallery index: it needs {INDEX_FILE} and {EMBEDDINGS_FILE}")
    try:
        metadata = json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{index_file} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{index_file} must hold a JSON object, found {type(metadata).__name__}")
    if metadata.get("format") != INDEX_FORMAT or metadata.get("version") != INDEX_VERSION:
        raise ValueError(
            f"{index_file} is format {metadata.get('format')!r} version {metadata.get('version')!r}; "
            f"expected {INDEX_FORMAT!r} version {INDEX_VERSION}"
        )
    problem = _metadata_problem(metadata)
    if problem:
        raise ValueError(f"{index_file} is damaged: {problem}")
    return metadata


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _metadata_problem(metadata: dict) -> str | None:
    """What is wrong with a parsed `index.json` (types, counts, references), or None."""
    model = metadata.get("model")
    if not isinstance(model, dict) or not all(isinstance(model.get(key), str) for key in ("name_or_path", "fingerprint")):
        return "'model' must be an object with the strings 'name_or_path' and 'fingerprint'"
    for key in ("embedding_dim", "num_images"):
        if not _is_int(metadata.get(key)) or metadata[key] < 0:
            return f"{key!r} must be a non-negative integer, found {metadata.get(key)!r}"
    sources, images = metadata.get("sources"), metadata.get("images")
    if not isinstance(sources, list) or not isinstance(images, list):
        return "'sources' and 'images' must be lists"
    for number, source in enumerate(sources):
        key = "root" if isinstance(source, dict) and source.get("type") == "folder" else "path"
        if not isinstance(source, dict) or source.get("type") not in ("folder", "dataset") or not isinstance(
            source.get(key), str
        ):
            return f"source {number} must be a folder (with 'root') or a dataset (with 'path'), found {source!r:.100}"
    if len(images) != metadata["num_images"]:
        return f"'num_images' is {metadata['num_images']} but 'images' lists {len(images)}"
    for position, image in enumerate(images):
        if not isinstance(image, dict) or not _is_int(image.get("source")) or not 0 <= image["source"] < len(sources):
            return f"image {position} must name a source between 0 and {len(sources) - 1}, found {image!r:.100}"
        if not isinstance(image.get("path"), str) or not (image.get("person_id") is None or _is_int(image["person_id"])):
            return f"image {position} needs a string 'path' and an integer or null 'person_id', found {image!r:.100}"
        if sources[image["source"]]["type"] == "dataset" and not (_is_int(image.get("row")) and image["row"] >= 0):
            return f"image {position} comes from a dataset but has no valid 'row', found {image!r:.100}"
    return None


def exact_top_k(
    query_embeds: torch.Tensor, gallery_embeds: torch.Tensor, top_k: int, chunk_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, positions) of the `top_k` highest inner products per query; scores one chunk of queries at a time."""
    scores, positions = [], []
    for start in range(0, len(query_embeds), chunk_size):
        chunk_scores = query_embeds[start : start + chunk_size] @ gallery_embeds.T
        top = chunk_scores.topk(top_k, dim=1)
        scores.append(top.values)
        positions.append(top.indices)
    return torch.cat(scores), torch.cat(positions)


def build_faiss_index(gallery_embeds: torch.Tensor, string_factory: str = "HNSW32", ef_search: int = 128):
    """An inner-product FAISS index over the gallery, through `datasets.search.FaissIndex` (trained on the whole
    gallery where the index type needs training, e.g. IVF). `ef_search` is the HNSW search breadth: 128 keeps
    recall@10 near 95% at 100k images in bench/search_bench.py, where the default 16 loses a third of the hits."""
    try:
        import faiss
        from datasets.search import FaissIndex
    except ImportError as error:
        raise ImportError('method="faiss" needs faiss-cpu: pip install "ivt-hf[faiss]"') from error
    index = FaissIndex(string_factory=string_factory, metric_type=faiss.METRIC_INNER_PRODUCT)
    vectors = gallery_embeds.float().contiguous().numpy()
    index.add_vectors(vectors, batch_size=max(len(vectors), 1), train_size=len(vectors))
    if hasattr(index.faiss_index, "hnsw"):
        index.faiss_index.hnsw.efSearch = ef_search
    return index
