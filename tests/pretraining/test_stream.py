"""The pre-training data stream: process slices, seeded shuffling, exact resume; corpora; fine-tuning from the result."""

import datasets
import pytest
import torch
from PIL import Image

from modeling_ivt import IVTConfig, IVTModel
from training.config import TrainingConfig
from training.initialization import build_model_and_processor
from training.pretrain import BenchmarkCaptionCorpus, PairStream, build_corpus


def numbered_pairs(count):
    return [{"image": None, "caption": f"caption {i}", "pair_id": i} for i in range(count)]


def take(stream, count):
    iterator = iter(stream)
    return [[pair["pair_id"] for pair in next(iterator)] for _ in range(count)]


def test_processes_get_disjoint_slices_of_each_global_batch_in_seeded_shuffled_passes():
    corpus = numbered_pairs(20)
    views = [PairStream(corpus, 3, 2, rank, buffer_size=5, seed=1) for rank in range(2)]
    batches = [take(view, 6) for view in views]  # 3 global batches of 6 per pass of 20 pairs: two passes
    for first, second in zip(*batches, strict=True):
        assert len(first) == len(second) == 3 and not set(first) & set(second)
    first_pass = {i for batch in batches[0][:3] + batches[1][:3] for i in batch}
    assert len(first_pass) == 18
    assert [i for batch in batches[0][:3] for i in batch] != sorted(i for batch in batches[0][:3] for i in batch)
    assert batches[0][:3] != batches[0][3:]  # each pass is shuffled afresh
    assert take(PairStream(corpus, 3, 2, 0, buffer_size=5, seed=1), 6) == batches[0]
    assert take(PairStream(corpus, 3, 2, 0, buffer_size=5, seed=2), 6) != batches[0]


def test_a_resumed_stream_continues_with_the_next_batch():
    corpus = numbered_pairs(20)
    fresh = take(PairStream(corpus, 4, 1, 0, buffer_size=7, seed=3), 9)
    resumed = PairStream(corpus, 4, 1, 0, buffer_size=7, seed=3)
    resumed.load_state_dict({"batches_consumed": 6})
    assert take(resumed, 3) == fresh[6:]


def test_a_corpus_smaller_than_one_global_batch_is_refused():
    with pytest.raises(ValueError, match=r"fewer usable pairs \(5\) than one global batch \(3 x 2 processes\)"):
        take(PairStream(numbered_pairs(5), 3, 2, 0, buffer_size=4, seed=0), 1)


def test_benchmark_split_becomes_a_generic_corpus_of_caption_pairs():
    image = Image.new("RGB", (16, 32), (200, 0, 0))
    split = datasets.Dataset.from_dict(
        {
            "image": [image, image],
            "person_id": [5, 5],
            "captions": [["first caption", "second caption"], ["third caption"]],
            "attributes": [["red coat"], ["red coat"]],
        }
    ).cast_column("image", datasets.Image())
    pairs = list(BenchmarkCaptionCorpus(split, chunk_size=2))
    assert [(p["caption"], p["pair_id"]) for p in pairs] == [
        ("first caption", 0),
        ("second caption", 1),
        ("third caption", 2),
    ]
    assert all(p["image"].size == (16, 32) for p in pairs)
    assert build_corpus(TrainingConfig(stage="pretrain"), {"train": split}).pairs.num_rows == 3
    with pytest.raises(ValueError, match="needs --pretrain.corpus, or a benchmark"):
        build_corpus(TrainingConfig(stage="pretrain"), None)


def test_fine_tuning_init_from_a_pretraining_folder_moves_the_encoder_to_the_recipe_stride(
    tmp_path, pretraining_model, processor
):
    pretraining_model.save_pretrained(tmp_path / "pretrained")
    processor.save_pretrained(tmp_path / "pretrained")
    config = TrainingConfig(init=str(tmp_path / "pretrained"), model=IVTConfig(patch_stride=8, token_drop_ratio=0.1))
    model, loaded_processor, source = build_model_and_processor(config)
    assert type(model) is IVTModel and source == f"pre-trained IVT {tmp_path / 'pretrained'}"
    assert model.config.patch_stride == 8 and model.config.token_drop_ratio == 0.1
    assert model.image_embeddings.position_embedding.shape == (1, 16, 32)
    torch.testing.assert_close(
        model.text_embeddings.word_embeddings.weight, pretraining_model.ivt.text_embeddings.word_embeddings.weight
    )
    assert loaded_processor.tokenizer.vocab_size == processor.tokenizer.vocab_size


def test_a_streaming_hugging_face_corpus_feeds_the_stream(pairs):
    from dataset_scripts.pretraining import pair_corpus

    def generate():
        for pair in pairs:
            yield {"jpg": pair["image"], "txt": pair["caption"]}

    features = datasets.Features({"jpg": datasets.Image(), "txt": datasets.Value("string")})
    streaming = datasets.IterableDataset.from_generator(generate, features=features)
    corpus = pair_corpus(streaming, image_column="jpg", text_column="txt")
    batches = take(PairStream(corpus, 2, 1, 0, buffer_size=3, seed=0), 4)  # 3 batches per pass: into the 2nd pass
    assert sorted(i for batch in batches[:3] for i in batch) == list(range(6))
    first = next(iter(PairStream(corpus, 2, 1, 0, buffer_size=3, seed=0)))
    assert first[0]["image"].mode == "RGB" and first[0]["caption"] == pairs[first[0]["pair_id"]]["caption"]
