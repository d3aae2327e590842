"""Gallery index: build, add, save, reopen, query, and refuse a different model."""

import copy
import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from ivt_search import GalleryIndex, ModelMismatchError, read_index_metadata
from ivt_search.index import EMBEDDINGS_FILE, INDEX_FILE

from .conftest import MODEL_TYPES


def load(folder):
    return AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def model_and_processor(model_dir):
    return load(model_dir)


@pytest.mark.parametrize("model_dir", MODEL_TYPES, indirect=True)
def test_split_index_ranks_like_the_model(model_dir, benchmark_dir):
    import datasets

    model, processor = load(model_dir)
    index = GalleryIndex(model, processor, batch_size=3)
    assert index.add_split(benchmark_dir, "test").added == 8
    test = datasets.load_from_disk(str(benchmark_dir))["test"]
    captions = [test[0]["captions"][0], test[5]["captions"][1]]

    with torch.no_grad():
        out = model(**processor(text=captions, images=list(test["image"])))
    expected = out.logits_per_text.topk(4, dim=1)

    results = index.search(captions, top_k=4)
    for hits, scores, positions in zip(results, expected.values, expected.indices, strict=True):
        assert [hit.position for hit in hits] == positions.tolist()
        torch.testing.assert_close(torch.tensor([hit.score for hit in hits]), scores, rtol=1e-4, atol=1e-5)
        assert [hit.rank for hit in hits] == [1, 2, 3, 4]
        assert [hit.person_id for hit in hits] == [test[p]["person_id"] for p in positions.tolist()]
        assert all(hit.path.endswith(test[p]["image_path"]) for hit, p in zip(hits, positions.tolist(), strict=True))
    assert (
        index.load_image(expected.indices[0, 0].item()).tobytes()
        == test[expected.indices[0, 0].item()]["image"].tobytes()
    )


def test_add_save_reopen_and_add_again(model_and_processor, benchmark_dir, photo_dir, tmp_path):
    model, processor = model_and_processor
    index = GalleryIndex(model, processor)
    index.add_split(benchmark_dir, "test")
    index.save(tmp_path / "index")

    reopened = GalleryIndex.open(tmp_path / "index", model, processor)
    assert len(reopened) == 8
    assert reopened.add_folder(photo_dir, person_id_from_folder=True).added == 6
    report = reopened.add_folder(photo_dir, person_id_from_folder=True)
    assert (report.added, report.already_indexed) == (0, 6), "images already indexed are skipped"
    assert reopened.add_split(benchmark_dir, "test").added == 0
    reopened.save(tmp_path / "index")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"], "no staging folder is left behind"

    final = GalleryIndex.open(tmp_path / "index", model, processor)
    metadata = read_index_metadata(tmp_path / "index")
    assert len(final) == metadata["num_images"] == 14
    assert metadata["embedding_dim"] == model.config.hidden_size
    assert [source["type"] for source in metadata["sources"]] == ["dataset", "folder"]
    torch.testing.assert_close(final.image_embeds, reopened.image_embeds)
    torch.testing.assert_close(final.image_embeds.norm(dim=1), torch.ones(14))

    photos = sorted(photo_dir.rglob("*.jpg"))
    photo_hits = [hit for hit in final.search("a person", top_k=14)[0] if not hit.path.startswith(str(benchmark_dir))]
    assert sorted(hit.path for hit in photo_hits) == sorted(str(p) for p in photos)
    for hit in photo_hits:
        assert hit.person_id == int(photos[[str(p) for p in photos].index(hit.path)].parent.name)
    # A photo embeds like the benchmark image it was saved from (JPEG re-encoding only).
    first_photo = final.images.index(next(i for i in final.images if i["path"].endswith("photo_0.jpg")))
    assert torch.dot(final.image_embeds[0], final.image_embeds[first_photo]) > 0.99


def test_refuses_an_index_of_another_model(model_and_processor, other_model_dir, model_dir, benchmark_dir, tmp_path):
    model, processor = model_and_processor
    index = GalleryIndex(model, processor)
    index.add_split(benchmark_dir, "test")
    index.save(tmp_path / "index")

    other_model, other_processor = load(other_model_dir)
    with pytest.raises(ModelMismatchError) as error:
        GalleryIndex.open(tmp_path / "index", other_model, other_processor)
    assert str(model_dir) in str(error.value) and str(other_model_dir) in str(error.value)

    processor.max_length = 50
    try:
        with pytest.raises(ModelMismatchError, match="not comparable"):
            GalleryIndex.open(tmp_path / "index", model, processor)
    finally:
        processor.max_length = 100


def test_bf16_weights_embed_close_to_fp32_and_open_the_same_index(model_and_processor, photo_dir, tmp_path):
    model, processor = model_and_processor
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    fp32, bf16 = GalleryIndex(model, processor), GalleryIndex(bf16_model, processor)
    fp32.add_folder(photo_dir)
    bf16.add_folder(photo_dir)
    assert bf16.image_embeds.dtype == torch.float32
    cosine = (fp32.image_embeds * bf16.image_embeds).sum(dim=1)
    assert cosine.min() > 0.98
    assert not torch.equal(fp32.image_embeds, bf16.image_embeds)
    fp32.save(tmp_path / "index")
    reopened = GalleryIndex.open(tmp_path / "index", bf16_model, processor)
    assert len(reopened.search("a person", top_k=2)[0]) == 2  # same checkpoint: the fingerprint matches


def test_faiss_search_agrees_with_exact_on_a_small_gallery(model_and_processor, benchmark_dir):
    pytest.importorskip("faiss", reason="faiss-cpu is an optional extra: pip install 'ivt-hf[faiss]'")
    model, processor = model_and_processor
    index = GalleryIndex(model, processor)
    index.add_split(benchmark_dir, "test")
    exact = index.search(["a man with a backpack", "a woman in a skirt"], top_k=5)
    approximate = index.search(["a man with a backpack", "a woman in a skirt"], top_k=5, method="faiss")
    for exact_hits, approximate_hits in zip(exact, approximate, strict=True):
        assert [h.position for h in approximate_hits] == [h.position for h in exact_hits]
        torch.testing.assert_close(
            torch.tensor([h.score for h in approximate_hits]),
            torch.tensor([h.score for h in exact_hits]),
            atol=1e-5,
            rtol=1e-5,
        )


def test_clear_errors_for_bad_input(model_and_processor, benchmark_dir, photo_dir, tmp_path):
    model, processor = model_and_processor
    index = GalleryIndex(model, processor)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        GalleryIndex(model, processor, batch_size=0)
    with pytest.raises(ValueError, match="holds no images yet"):
        index.search("a man")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*holds no images"):
        index.add_folder(empty)
    with pytest.raises(NotADirectoryError, match="missing"):
        index.add_folder(tmp_path / "missing")
    broken = tmp_path / "broken" / "12"
    broken.mkdir(parents=True)
    (broken / "cut.jpg").write_bytes((next(photo_dir.rglob("*.jpg"))).read_bytes()[:50])
    with pytest.raises(ValueError, match="cut.jpg cannot be decoded"):
        index.add_folder(tmp_path / "broken", strict=True)
    report = index.add_folder(tmp_path / "broken")
    assert report.added == 0 and [image.path for image in report.skipped] == [str(broken / "cut.jpg")]
    assert report.skipped[0].reason.startswith("cannot be decoded")
    Image.new("RGB", (20, 40)).save(tmp_path / "broken" / "loose.png")
    with pytest.raises(ValueError, match="folder of .*loose.png is 'broken', not an integer"):
        index.add_folder(tmp_path / "broken", person_id_from_folder=True)
    with pytest.raises(ValueError, match="splits .*'test'.*got 'dev'"):
        index.add_split(benchmark_dir, "dev")
    assert len(index) == 0, "a failed add leaves the index unchanged"

    index.add_split(benchmark_dir, "test")
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        index.search("a man", top_k=0)
    assert len(index.search("a man", top_k=100)[0]) == 8

    index.save(tmp_path / "index")
    metadata = json.loads((tmp_path / "index" / INDEX_FILE).read_text())
    metadata["version"] = 99
    (tmp_path / "index" / INDEX_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="version 99"):
        GalleryIndex.open(tmp_path / "index", model, processor)
    (tmp_path / "index" / EMBEDDINGS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="is not a gallery index"):
        GalleryIndex.open(tmp_path / "index", model, processor)


def test_an_index_moves_together_with_its_gallery(model_and_processor, photo_dir, tmp_path):
    model, processor = model_and_processor
    shutil.copytree(photo_dir, tmp_path / "space" / "photos")
    index = GalleryIndex(model, processor)
    index.add_folder(tmp_path / "space" / "photos")
    index.save(tmp_path / "space" / "index")
    shutil.move(tmp_path / "space", tmp_path / "moved")

    moved = GalleryIndex.open(tmp_path / "moved" / "index", model, processor)
    hit = moved.search("a person", top_k=1)[0][0]
    assert hit.path.startswith(str(tmp_path / "moved" / "photos"))
    assert moved.load_image(hit.position).size == Image.open(hit.path).size


@pytest.mark.parametrize("model_dir", ["irra"], indirect=True)
def test_an_irra_index_records_its_type_and_refuses_an_ivt(model_dir, other_model_dir, benchmark_dir, tmp_path):
    model, processor = load(model_dir)
    index = GalleryIndex(model, processor)
    assert index.image_embeds.shape == (0, model.config.projection_dim)
    index.add_split(benchmark_dir, "test")
    index.save(tmp_path / "index")
    metadata = read_index_metadata(tmp_path / "index")
    assert metadata["model"]["model_type"] == "irra" and metadata["embedding_dim"] == model.config.projection_dim

    ivt, ivt_processor = load(other_model_dir)
    with pytest.raises(ModelMismatchError, match=r"\(irra, fingerprint \w+\), but .* \(ivt, fingerprint"):
        GalleryIndex.open(tmp_path / "index", ivt, ivt_processor)
    assert len(GalleryIndex.open(tmp_path / "index", model, processor)) == 8
