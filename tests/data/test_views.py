import pickle

import torch
from PIL import Image

from dataset_scripts.build import build_benchmark
from dataset_scripts.views import gallery, queries, training_pairs


def test_views_of_a_built_split(make_raw, tmp_path):
    raw_root, records, _ = make_raw("cuhk-pedes")
    train = build_benchmark("cuhk-pedes", raw_root, tmp_path / "cuhk")["train"]

    pairs = training_pairs(train)
    assert len(pairs) == 2 + 1 + 10
    assert set(pairs.column_names) == {"row", "person_id", "caption", "attributes"}
    assert pairs["caption"][:3] == ["A woman in a red coat.", "She carries a bag.", records[1]["captions"][0]]
    assert pairs["row"] == [0, 0, 1] + [2] * 10
    example = pairs[4]
    assert set(example) == {"image", "row", "person_id", "caption", "attributes"}
    assert isinstance(example["image"], Image.Image) and example["image"].size == (24, 64)
    assert example["person_id"] == 17 and example["caption"] == "Caption number 1 of a man in a grey coat."
    batch = pairs[0:3]
    assert [image.size for image in batch["image"]] == [(24, 64)] * 3
    assert pickle.loads(pickle.dumps(pairs))[2]["caption"] == records[1]["captions"][0]  # DataLoader workers

    captions, person_ids = queries(train)
    assert captions == pairs["caption"]
    assert person_ids.dtype == torch.long and person_ids.tolist() == [1, 1, 17] + [17] * 10

    images = gallery(train)
    assert images.column_names == ["image", "person_id", "image_path"]
    assert images["person_id"] == [1, 17, 17] and len(images) == len(train)


def test_generated_views_feed_the_ivt_processor(tmp_path):
    from dataset_scripts.generate import GeneratorSettings, ensure_generated_benchmark
    from modeling_ivt import create_processor

    dataset_dict = ensure_generated_benchmark(
        tmp_path / "drawn", GeneratorSettings(num_train_ids=3, num_val_ids=2, num_test_ids=2, images_per_id=2), num_workers=1
    )
    processor = create_processor(image_size=(384, 128), max_length=100)
    captions, person_ids = queries(dataset_dict["test"])
    token_ids = processor.tokenizer(captions)["input_ids"]
    assert max(len(ids) for ids in token_ids) <= 100
    assert not any(processor.tokenizer.unk_token_id in ids for ids in token_ids)  # every word is in the BERT vocab

    pairs = training_pairs(dataset_dict["train"])[:4]
    batch = processor(text=pairs["caption"], images=pairs["image"], return_tensors="pt", padding=True)
    assert batch["pixel_values"].shape == (4, 3, 384, 128)
    images = gallery(dataset_dict["test"])
    assert len(images) == 4 and len(person_ids) == 8 and set(images["person_id"]) == set(person_ids.tolist())
