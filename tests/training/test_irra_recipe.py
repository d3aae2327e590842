"""IRRA's recipe pieces: parameter groups and learning-rate factors, the per-epoch schedule, the random sampler and
the training augmentation."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_ivt import IRRAConfig
from training.augmentation import IRRATrainAugmentation
from training.config import CONFIG_DIR, parse_config
from training.irra_recipe import build_irra_optimizer, build_irra_scheduler, irra_schedule_factor, parameter_setting
from training.sampler import RandomBatchSampler

BASE_LR, WEIGHT_DECAY = 1e-5, 4e-5
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# name -> (learning-rate factor, weight decay), written out from the released recipe
EXPECTED_GROUPS = {
    "model.vision_model.encoder.layers.0.self_attn.q_proj.weight": (1, 4e-5),
    "model.vision_model.encoder.layers.0.self_attn.q_proj.bias": (2, 0.0),
    "model.vision_model.embeddings.class_embedding": (1, 4e-5),
    "model.text_model.final_layer_norm.weight": (1, 4e-5),
    "model.text_model.final_layer_norm.bias": (2, 0.0),
    "irr.cross_attn.in_proj_weight": (5, 4e-5),
    "irr.cross_attn.in_proj_bias": (2, 0.0),
    "irr.cross_attn.out_proj.bias": (2, 0.0),
    "irr.cross_modal_transformer.resblocks.0.mlp.c_fc.weight": (5, 4e-5),
    "irr.cross_modal_transformer.resblocks.3.ln_1.bias": (2, 0.0),
    "irr.ln_pre_t.weight": (1, 4e-5),
    "irr.ln_pre_i.bias": (2, 0.0),
    "irr.ln_post.weight": (1, 4e-5),
    "irr.mlm_head.dense.weight": (5, 4e-5),
    "irr.mlm_head.ln.weight": (5, 4e-5),
    "irr.mlm_head.fc.bias": (5, 0.0),
    "classifier.weight": (5, 4e-5),
    "classifier.bias": (5, 0.0),
}


def test_parameter_settings_follow_the_released_rules():
    for name, (factor, decay) in EXPECTED_GROUPS.items():
        rate, got_decay = parameter_setting(name, BASE_LR, WEIGHT_DECAY, 5.0, 2.0, 0.0)
        assert rate == pytest.approx(factor * BASE_LR), name
        assert got_decay == decay, name


def test_optimizer_is_adam_with_the_recipe_settings_per_parameter():
    model = torch.nn.ModuleDict(
        {
            "classifier": torch.nn.Linear(4, 3),
            "backbone": torch.nn.Linear(4, 4),
            "cross_attn": torch.nn.MultiheadAttention(4, 1),
        }
    )
    model.backbone.weight.requires_grad_(False)
    optimizer = build_irra_optimizer(model, BASE_LR, WEIGHT_DECAY, 5.0, 2.0, 0.0, betas=(0.9, 0.999), eps=1e-3)
    assert type(optimizer) is torch.optim.Adam
    setting = {}
    for group in optimizer.param_groups:
        assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-3
        for parameter in group["params"]:
            setting[id(parameter)] = (group["lr"] / BASE_LR, group["weight_decay"])
    named = dict(model.named_parameters())
    assert id(named["backbone.weight"]) not in setting  # frozen parameters are left out
    expected = {
        "classifier.weight": (5, 4e-5),
        "classifier.bias": (5, 0.0),
        "backbone.bias": (2, 0.0),
        "cross_attn.in_proj_weight": (5, 4e-5),
        "cross_attn.in_proj_bias": (2, 0.0),
        "cross_attn.out_proj.weight": (5, 4e-5),
        "cross_attn.out_proj.bias": (2, 0.0),
    }
    for name, (factor, decay) in expected.items():
        assert setting[id(named[name])] == (pytest.approx(factor), decay), name


def test_schedule_is_the_released_per_epoch_warmup_and_cosine():
    # epochs numbered 1..60 as released: 0.1 + 0.9 (epoch - 1) / 5 for 1-5, 0.5 (1 + cos(pi (epoch - 6) / 55)) after
    for epoch in range(1, 61):
        expected = 0.1 + 0.9 * (epoch - 1) / 5 if epoch <= 5 else 0.5 * (1 + math.cos(math.pi * (epoch - 6) / 55))
        assert irra_schedule_factor(epoch - 1, 5, 60, 0.1) == pytest.approx(expected), epoch
    assert [round(irra_schedule_factor(e, 5, 60, 0.1), 4) for e in range(6)] == [0.1, 0.28, 0.46, 0.64, 0.82, 1.0]
    assert irra_schedule_factor(59, 5, 60, 0.1) == pytest.approx(0.000815, abs=1e-6)

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [parameter], "lr": 5e-5}])
    scheduler = build_irra_scheduler(optimizer, steps_per_epoch=3, warmup_epochs=5, num_epochs=60, warmup_factor=0.1)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([5e-6] * 3 + [1.4e-5] * 3 + [2.3e-5])


def test_random_sampler_covers_each_epoch_once_split_over_processes_and_resumes():
    samplers = [RandomBatchSampler(23, 4, num_replicas=2, rank=rank, seed=5) for rank in range(2)]
    epoch0 = [list(sampler) for sampler in samplers]
    assert [len(batches) for batches in epoch0] == [2, 2]  # 23 items: 5 full batches of 4, cut to 4 for 2 processes
    items = [index for batches in epoch0 for batch in batches for index, _ in batch]
    assert len(items) == 16 and len(set(items)) == 16
    for sampler in samplers:
        sampler.set_epoch(1)
    epoch1 = [list(sampler) for sampler in samplers]
    assert epoch1 != epoch0
    assert [list(RandomBatchSampler(23, 4, 2, 0, seed=5)) for _ in range(2)] == [epoch0[0]] * 2

    resumed = RandomBatchSampler(23, 4, 2, 0, seed=5)
    resumed.load_state_dict({"seed": 5, "epoch": 1, "batches_consumed": 1})
    assert list(resumed) == epoch1[0][1:]
    with pytest.raises(ValueError, match="cannot fill"):
        RandomBatchSampler(5, 4, num_replicas=2)


def test_irra_augmentation_normalises_with_the_given_mean_and_erases_with_it():
    image = Image.fromarray(np.full((40, 20, 3), 255, dtype=np.uint8))
    plain = IRRATrainAugmentation((32, 16), CLIP_MEAN, CLIP_STD, enabled=False)(image, torch.Generator())
    white = [(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)]
    torch.testing.assert_close(plain, torch.tensor(white).view(3, 1, 1).expand(3, 32, 16))

    erase_only = IRRATrainAugmentation((32, 16), CLIP_MEAN, CLIP_STD, pad=0, flip_prob=0.0, erasing_prob=1.0)
    erased = erase_only(image, torch.Generator().manual_seed(0))
    filled = ~torch.isclose(erased, plain)
    assert 0.02 * 32 * 16 * 3 * 0.9 <= filled.sum() <= 0.4 * 32 * 16 * 3
    for channel, mean in enumerate(CLIP_MEAN):
        assert torch.allclose(erased[channel][filled[channel]], torch.tensor(mean))

    padded = IRRATrainAugmentation((32, 16), CLIP_MEAN, CLIP_STD, pad=10, flip_prob=0.0, erasing_prob=0.0)
    views = [padded(image, torch.Generator().manual_seed(seed)) for seed in range(8)]
    black = torch.tensor([-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    shifted = [view for view in views if torch.isclose(view[:, 0, 0], black).all() or torch.isclose(view[:, -1, -1], black).all()]
    assert len(shifted) >= 6  # a crop offset other than (10, 10) brings zero padding in
    again = padded(image, torch.Generator().manual_seed(3))
    assert torch.equal(again, views[3])


@pytest.mark.parametrize("benchmark", ["cuhk_pedes", "icfg_pedes", "rstpreid"])
def test_irra_recipes_are_the_released_recipe(benchmark):
    config = parse_config(["--config", str(CONFIG_DIR / f"irra_{benchmark}.yaml")])
    assert isinstance(config.model, IRRAConfig) and config.init == "clip"
    assert (config.model.vision_config.image_size, config.model.vision_config.patch_stride) == ([384, 128], 16)
    finetune = config.finetune
    assert (finetune.losses, finetune.temperature, finetune.sampler, finetune.batch_size) == ("sdm+id+irr", 0.02, "random", 64)
    assert not finetune.local_loss and finetune.validation_split == "validation"
    assert (config.optimizer, config.learning_rate, config.adam_beta1, config.adam_beta2, config.adam_epsilon) == (
        "adam", 1e-5, 0.9, 0.999, 1e-3
    )
    assert (config.head_lr_factor, config.bias_lr_factor, config.weight_decay, config.bias_weight_decay) == (5, 2, 4e-5, 0)
    assert (config.lr_schedule, config.warmup_epochs, config.warmup_factor, config.num_epochs) == ("irra", 5, 0.1, 60)
    assert (config.augment, config.pad, config.flip_prob, config.erasing_prob) == (True, 10, 0.5, 0.5)
