"""The released recipes, point by point where the released code differs from a plausible default."""

import datasets
import pytest
from PIL import Image

from training.config import CONFIG_DIR, parse_config
from training.text_levels import caption_word_starts, cut_caption


def recipe(name):
    return parse_config(["--config", str(CONFIG_DIR / f"{name}.yaml")])


@pytest.mark.parametrize("name,gpus", [("cuhk_pedes", 4), ("icfg_pedes", 4), ("rstpreid", 1)])
def test_fine_tuning_recipes_follow_the_released_code(name, gpus):
    config = recipe(name)
    # CMPM per GPU in the 4-GPU recipes (each process's own batch); RSTPReid ran on one GPU, where both agree
    assert config.finetune.local_loss is (gpus > 1)
    # the loops: CUHK-PEDES counts epochs 1..120, the others 0..120 (121 epochs), timm's cosine from epoch 0
    assert (config.first_epoch, config.num_epochs) == ((1, 120) if name == "cuhk_pedes" else (0, 121))
    assert (config.warmup_prefix, config.schedule_unit, config.warmup_epochs) == (False, "epoch", 5)
    # word level: k uniform in 1..the number of attribute phrases; captions never truncated below BERT's 512
    assert config.word_max_phrases is None and config.max_text_length == 512
    assert (config.erasing_prob, config.flip_prob, config.pad, config.mixed_precision) == (0.5, 0.5, 10, "fp16")


def test_pretraining_recipe_is_the_released_one():
    config = recipe("pretrain")
    assert config.stage == "pretrain" and config.model.patch_stride == 16 and config.model.token_drop_ratio == 0.0
    # the fine-tuning optimiser and schedule, epochs 0..120, 48 pairs per GPU
    assert (config.optimizer, config.learning_rate, config.bias_lr_factor, config.momentum, config.weight_decay) == (
        "sgd", 0.005, 2.0, 0.9, 1e-4,
    )
    assert (config.num_epochs, config.first_epoch, config.warmup_prefix, config.schedule_unit) == (121, 0, False, "epoch")
    assert (config.warmup_epochs, config.warmup_start_lr, config.min_lr) == (5, 5e-5, 1e-5)
    assert config.pretrain.batch_size == 48 and config.max_train_steps == 121 * (4_160_000 // (48 * 8))
    # the fine-tuning augmentation, random erasing included; captions of 50 words, [CLS] + 49 tokens
    assert (config.erasing_prob, config.pad, config.flip_prob) == (0.5, 10, 0.5)
    assert (config.pretrain.max_caption_words, config.pretrain.max_caption_tokens, config.pretrain.mlm_probability, config.pretrain.mlm_max_masked_tokens) == (
        50, 50, 0.25, 8,
    )
    assert (config.model.itc_loss_weight, config.model.itm_loss_weight, config.model.mlm_loss_weight, config.model.cmpm_loss_weight) == (1, 1, 1, 0)
    assert (config.model.fusion_num_hidden_layers, config.model.temperature_init, config.mixed_precision) == (6, 0.5, "fp16")


def test_words_are_counted_as_the_released_loaders_count_them():
    # pieces between spaces; "man," and "red." split at their mark; the empty piece between two spaces is a word
    assert caption_word_starts("a man,  in red. He") == [0, 2, 7, 8, 11, 16]
    assert caption_word_starts("blue,white u.s.a?") == [0, 5, 11, 13, 15]  # "u.s.a?" splits at "." only
    long_caption = " ".join(f"w{i}" for i in range(95)) + "."
    assert cut_caption(long_caption, 90) == " ".join(f"w{i}" for i in range(90))
    assert cut_caption("a man in red.", 90) == "a man in red."


def test_icfg_cuts_and_rstpreid_drops_long_training_captions_never_test_ones(tmp_path):
    from dataset_scripts.build import FEATURES
    from dataset_scripts.views import queries
    from training.augmentation import TrainAugmentation
    from training.ivt_training import IVTTrainingDataset
    from training.run import select_training_pairs

    long_caption = " ".join(["word"] * 95)
    image = Image.new("RGB", (8, 16))
    split = datasets.Dataset.from_dict(
        {
            "image": [image, image],
            "image_path": ["a.jpg", "b.jpg"],
            "person_id": [1, 2],
            "captions": [[long_caption, "a short one"], ["another short one"]],
            "attributes": [[], []],
        },
        features=FEATURES,
    )
    benchmark = datasets.DatasetDict({"train": split, "test": split})
    icfg, rstp = recipe("icfg_pedes"), recipe("rstpreid")
    assert (icfg.finetune.train_caption_words, icfg.finetune.long_train_captions) == (90, "cut")
    assert (rstp.finetune.train_caption_words, rstp.finetune.long_train_captions) == (90, "drop")
    assert recipe("cuhk_pedes").finetune.train_caption_words is None

    dropped = select_training_pairs(rstp, benchmark)
    assert list(dropped["caption"]) == ["a short one", "another short one"]
    kept = select_training_pairs(icfg, benchmark)
    assert len(kept) == 3
    augmentation = TrainAugmentation((16, 8), enabled=False)
    item = IVTTrainingDataset(kept, augmentation, max_caption_words=icfg.finetune.train_caption_words)[(0, 0)]
    assert item["texts"][0] == " ".join(["word"] * 90)
    assert queries(benchmark["test"])[0][0] == long_caption  # evaluation keeps every caption whole
