"""Fine-tuning IRRA-family models: initialisation from CLIP, the training-time model and its data."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from modeling_ivt import IRRAConfig, IRRAModel, create_irra_processor
from modeling_ivt.conversion_utils import save_model_folder
from modeling_ivt.convert_clip import irra_config_from_clip, irra_from_clip, irra_from_clip_folder
from tests.model.irra_reference import random_irra_checkpoint
from training.config import parse_config
from training.initialization import build_irra_model_and_processor
from training.irra_training import IRRAForRetrievalTraining
from training.loss import contiguous_class_ids


def tiny_clip(tmp_path):
    """A random CLIPModel (64 x 64 images, patch 16: a 4 x 4 grid) saved in transformers' layout."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
        vision_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16
        ),
        projection_dim=32,
    )
    model = CLIPModel(config)
    with torch.no_grad():  # a plane over the grid: channel 0 = row, channel 1 = column
        grid = model.vision_model.embeddings.position_embedding.weight[1:].view(4, 4, 64)
        grid[..., 0] = torch.arange(4.0)[:, None]
        grid[..., 1] = torch.arange(4.0)[None, :]
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    return model, folder


def test_clip_initialisation_loads_every_tensor_and_resizes_the_position_grid(tmp_path):
    clip, folder = tiny_clip(tmp_path)
    assert (folder / "model.safetensors").is_file()
    model, report = irra_from_clip_folder(folder, image_size=(96, 32), patch_stride=16)
    assert model.config.vision_config.patch_grid == (6, 2)
    assert report.not_loaded == []
    assert report.unused == ["logit_scale"]
    assert any("4 x 4 to 6 x 2" in note for note in report.notes)

    source = clip.state_dict()
    loaded = model.state_dict()
    for name in (
        "text_model.embeddings.token_embedding.weight",
        "text_model.encoder.layers.1.self_attn.v_proj.bias",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.class_embedding",
        "vision_model.post_layernorm.weight",
        "visual_projection.weight",
        "text_projection.weight",
    ):
        torch.testing.assert_close(loaded[name], source[name], msg=name)
    torch.testing.assert_close(loaded["vision_model.pre_layernorm.bias"], source["vision_model.pre_layrnorm.bias"])

    positions = loaded["vision_model.embeddings.position_embedding.weight"]
    torch.testing.assert_close(positions[0], source["vision_model.embeddings.position_embedding.weight"][0])
    grid = positions[1:].view(6, 2, 64)
    # bilinear, align_corners=False, 4 -> 6 rows: source row (i + 0.5) * 4 / 6 - 0.5 clamped to [0, 3];
    # 4 -> 2 columns: source column (j + 0.5) * 2 - 0.5
    rows = torch.tensor([0.0, 0.5, 7 / 6, 11 / 6, 2.5, 3.0])
    torch.testing.assert_close(grid[..., 0], rows[:, None].expand(6, 2))
    torch.testing.assert_close(grid[..., 1], torch.tensor([0.5, 2.5]).expand(6, 2))

    with torch.no_grad():
        images = torch.randn(2, 3, 96, 32)
        assert torch.isfinite(model.get_image_features(images).pooler_output).all()


def test_clip_initialisation_refuses_a_config_that_does_not_fit(tmp_path):
    clip, _ = tiny_clip(tmp_path)
    config = irra_config_from_clip(clip.config, image_size=(96, 32), patch_stride=16)
    narrow = IRRAConfig(
        text_config={**config.text_config.to_dict(), "hidden_size": 32, "num_attention_heads": 1},
        vision_config=config.vision_config.to_dict(),
        projection_dim=32,
    )
    with pytest.raises(ValueError, match=r"text_model\.embeddings\.token_embedding\.weight has shape \(49408, 64\)"):
        irra_from_clip(clip.state_dict(), narrow)


def tiny_irra_config() -> IRRAConfig:
    return IRRAConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1),
        vision_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=1, image_size=[48, 16]
        ),
        projection_dim=128,
    )


def test_training_model_heads_stay_out_of_the_saved_model(tmp_path):
    torch.manual_seed(0)
    training = IRRAForRetrievalTraining(IRRAModel(tiny_irra_config()), num_train_ids=700, irr=True)
    assert training.classifier.weight.shape == (700, 128)
    assert training.classifier.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert not training.classifier.bias.any()
    assert training.irr.cross_attn.num_heads == 2  # 128 / 64
    assert len(training.irr.cross_modal_transformer.resblocks) == 4

    processor = create_irra_processor(training.model.config)
    save_model_folder(training.model, processor, tmp_path / "best")
    saved = load_file(tmp_path / "best" / "model.safetensors")
    assert set(saved) == set(training.model.state_dict())
    assert not any(key.startswith(("classifier", "irr", "model.")) for key in saved)
    assert json.loads((tmp_path / "best" / "config.json").read_text())["model_type"] == "irra"


def test_contiguous_class_ids_map_sorted_person_ids_to_0_to_n():
    assert contiguous_class_ids([907, 12, 12, 55, 907]) == {12: 0, 55: 1, 907: 2}


def test_an_irra_checkpoint_initialises_the_model_and_the_training_heads(tmp_path):
    checkpoint = tmp_path / "best.pth"
    state_dict = random_irra_checkpoint(embed=64, ddp=True)
    torch.save({"model": state_dict, "epoch": 60}, checkpoint)
    config = parse_config(["--config", "training/configs/irra_rstpreid.yaml", "--init", str(checkpoint)])
    model, processor, source, heads = build_irra_model_and_processor(config)
    assert source == "IRRA checkpoint best.pth" and processor.tokenizer.mask_token_id == 49405
    assert model.config.vision_config.patch_grid == (24, 8) and model.config.projection_dim == 64
    torch.testing.assert_close(
        model.visual_projection.weight, state_dict["module.base_model.visual.proj"].float().t()
    )

    training = IRRAForRetrievalTraining(model, num_train_ids=11, irr=True)
    loaded = training.load_training_heads(heads)
    for name in (
        "classifier.weight",
        "irr.cross_attn.in_proj_weight",
        "irr.cross_modal_transformer.resblocks.0.mlp.c_fc.weight",
        "irr.ln_pre_i.weight",
        "irr.mlm_head.fc.weight",
    ):
        assert name in loaded, name
    irra_name = "mlm_head.dense.weight"
    torch.testing.assert_close(training.irr.mlm_head.dense.weight, state_dict[f"module.{irra_name}"].float())
    torch.testing.assert_close(training.classifier.weight, state_dict["module.classifier.weight"].float())

    # another training set (5 identities): the classifier starts new, the IRR head still loads
    other = IRRAForRetrievalTraining(model, num_train_ids=5, irr=True)
    loaded = other.load_training_heads(heads)
    assert "classifier.weight" not in loaded and "irr.cross_attn.in_proj_weight" in loaded
    assert other.classifier.weight.std().item() == pytest.approx(0.001, rel=0.1)
