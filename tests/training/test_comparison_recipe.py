"""The IRRA-family recipe on Drawn Pedestrians is the default IVT recipe's size and budget, so the two compare."""

from modeling_ivt import IRRAModel, IVTModel
from training.config import CONFIG_DIR, parse_config
from training.initialization import build_irra_model_and_processor

TOWER_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def recipe(name):
    return parse_config(["--config", str(CONFIG_DIR / f"{name}.yaml")])


def test_irra_recipe_builds_towers_of_the_default_ivt_size():
    ivt, irra = recipe("generated"), recipe("irra_generated")
    assert irra.model.model_type == "irra" and irra.init == "random"
    model, processor, _, heads = build_irra_model_and_processor(irra)
    assert isinstance(model, IRRAModel) and heads == {}
    for tower in (model.config.text_config, model.config.vision_config):
        assert {name: getattr(tower, name) for name in TOWER_SIZES} == {
            name: getattr(ivt.model, name) for name in TOWER_SIZES
        }
    vision = model.config.vision_config
    assert (tuple(vision.image_size), vision.patch_size, vision.patch_stride) == (
        tuple(ivt.model.image_size), ivt.model.patch_size, ivt.model.patch_stride,
    )
    assert model.config.projection_dim == ivt.model.hidden_size
    assert model.config.text_config.max_position_embeddings == ivt.max_text_length
    assert processor(text="a man in a red coat")["input_ids"].shape == (1, ivt.max_text_length)
    # the sizes docs/irra_training.md states: two towers where IVT shares one encoder, and CLIP's 49,408-token
    # embedding table where IVT has BERT's 30,522
    assert sum(p.numel() for p in model.parameters()) == 12_392_832
    assert sum(p.numel() for p in IVTModel(ivt.model).parameters()) == 8_334_720


def test_irra_recipe_trains_on_the_default_ivt_budget():
    ivt, irra = recipe("generated"), recipe("irra_generated")
    assert (irra.dataset, irra.generate_benchmark) == (ivt.dataset, ivt.generate_benchmark)
    assert irra.finetune.items_per_batch == ivt.finetune.items_per_batch
    budget = ("num_epochs", "mixed_precision", "num_threads", "num_workers", "seed", "learning_rate", "lr_schedule")
    schedule = ("warmup_epochs", "warmup_start_lr", "min_lr", "schedule_unit", "warmup_prefix")
    for name in budget + schedule:
        assert getattr(irra, name) == getattr(ivt, name), name
    assert (irra.optimizer, irra.finetune.sampler, irra.finetune.losses) == ("adam", "random", "sdm+id+irr")
