import pytest
import torch

from modeling_ivt import IRRAConfig, IRRAModel

from .conftest import TINY_IRRA_IMAGE_SIZE, tiny_irra_config


def test_config_defaults_are_irra_vit_b16_at_384_by_128():
    config = IRRAConfig()
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size) == (
        768, 12, 12, 3072,
    )
    assert tuple(vision.image_size) == (384, 128) and vision.patch_size == 16 and vision.patch_stride == 16
    assert vision.patch_grid == (24, 8) and vision.num_positions == 193
    assert IRRAConfig(vision_config={"patch_stride": 12}).vision_config.patch_grid == (31, 10)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size) == (
        512, 12, 8, 2048,
    )
    assert text.vocab_size == 49408 and text.max_position_embeddings == 77 and config.projection_dim == 512
    assert vision.layer_norm_eps == text.layer_norm_eps == 1e-5
    assert vision.hidden_act == text.hidden_act == "quick_gelu"


def test_vit_b16_parameter_count():
    with torch.device("meta"):
        model = IRRAModel(IRRAConfig())
    # CLIP ViT-B/16 (149.6M) with 193 instead of 197 image positions
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 149.6) < 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"text_config": {"hidden_size": 30, "num_attention_heads": 4}}, "text_config: hidden_size"),
        ({"vision_config": {"num_attention_heads": 0}}, "vision_config: hidden_size"),
        ({"vision_config": {"image_size": (384, 8)}}, "image_size"),
        ({"vision_config": {"patch_stride": 0}}, "patch_stride"),
        ({"text_config": {"max_position_embeddings": 0}}, "max_position_embeddings"),
        ({"projection_dim": -1}, "projection_dim"),
    ],
)
def test_invalid_sizes_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        IRRAConfig(**overrides)


def test_config_round_trips_through_json(tmp_path):
    config = tiny_irra_config(patch_stride=12)
    config.save_pretrained(tmp_path)
    loaded = IRRAConfig.from_pretrained(tmp_path)
    assert loaded.vision_config.patch_grid == config.vision_config.patch_grid == (3, 2)
    assert loaded.to_dict()["text_config"] == config.to_dict()["text_config"]


def test_feature_shapes_projections_and_scores(irra_model):
    config = irra_model.config
    input_ids = torch.tensor([[49406, 320, 1125, 530, 49407, 0, 0], [49406, 736, 7356, 49407, 0, 0, 0]])
    pixel_values = torch.randn(2, 3, *TINY_IRRA_IMAGE_SIZE)
    with torch.no_grad():
        text = irra_model.get_text_features(input_ids=input_ids)
        image = irra_model.get_image_features(pixel_values=pixel_values)
        out = irra_model(input_ids=input_ids, pixel_values=pixel_values)
        tower = irra_model.vision_model(pixel_values)
    assert text.last_hidden_state.shape == (2, 7, 24) and text.pooler_output.shape == (2, 24)
    assert image.last_hidden_state.shape == (2, config.vision_config.num_positions, 24)
    # pooled rows: end-of-text (the argmax of the ids) for text, the class token for images
    torch.testing.assert_close(text.pooler_output, text.last_hidden_state[[0, 1], [4, 3]])
    torch.testing.assert_close(image.pooler_output, image.last_hidden_state[:, 0])
    torch.testing.assert_close(image.last_hidden_state, irra_model.visual_projection(tower.last_hidden_state))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.logits_per_text, out.text_embeds @ out.image_embeds.t())
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.t())


def test_text_tower_is_causal(irra_model):
    ids = torch.tensor([[49406, 320, 1125, 530, 49407]])
    changed = ids.clone()
    changed[0, 3] = 2308
    with torch.no_grad():
        a = irra_model.get_text_features(input_ids=ids).last_hidden_state
        b = irra_model.get_text_features(input_ids=changed).last_hidden_state
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_caption_alone_equals_caption_in_padded_batch(irra_model, irra_processor, attn_implementation):
    irra_model.set_attn_implementation(attn_implementation)
    captions = ["A young woman in a red coat and black trousers, carrying a white handbag.", "The man wears a blue shirt."]
    with torch.no_grad():
        together = irra_model.get_text_features(**irra_processor(text=captions, padding=True)).pooler_output
        for i, caption in enumerate(captions):
            alone = irra_model.get_text_features(**irra_processor(text=[caption], padding=True)).pooler_output
            torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)
            fixed = irra_model.get_text_features(**irra_processor(text=[caption])).pooler_output
            torch.testing.assert_close(fixed[0], together[i], atol=1e-5, rtol=1e-5)


def test_sdpa_and_eager_agree(irra_model, irra_processor):
    eager = IRRAModel(tiny_irra_config()).eval()
    eager.load_state_dict(irra_model.state_dict())
    eager.set_attn_implementation("eager")
    assert irra_model.config._attn_implementation == "sdpa"
    assert eager.text_model.encoder.layers[0].self_attn.config._attn_implementation == "eager"
    batch = irra_processor(text=["a man in a grey hoodie", "a woman with a long blue skirt and white shoes"])
    pixel_values = torch.randn(2, 3, *TINY_IRRA_IMAGE_SIZE)
    with torch.no_grad():
        a = irra_model(**batch, pixel_values=pixel_values)
        b = eager(**batch, pixel_values=pixel_values)
    torch.testing.assert_close(a.text_embeds, b.text_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.image_embeds, b.image_embeds, atol=1e-5, rtol=1e-5)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(
        a.text_model_output.last_hidden_state[mask], b.text_model_output.last_hidden_state[mask], atol=1e-5, rtol=1e-5
    )


def test_gradient_checkpointing_gives_the_same_gradients(irra_model):
    input_ids = torch.tensor([[49406, 320, 1125, 49407, 0]])
    pixel_values = torch.randn(1, 3, *TINY_IRRA_IMAGE_SIZE)
    gradients = []
    for checkpointing in (False, True):
        irra_model.zero_grad()
        if checkpointing:
            irra_model.activation_checkpointing_enable()
        irra_model.train()
        out = irra_model(input_ids=input_ids, pixel_values=pixel_values)
        (out.text_model_output.pooler_output.sum() + out.vision_model_output.pooler_output.sum()).backward()
        gradients.append({n: p.grad.clone() for n, p in irra_model.named_parameters() if p.grad is not None})
    assert irra_model.vision_model.encoder.layers[0].gradient_checkpointing
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 40
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name])


def test_wrong_image_size_and_missing_inputs_are_refused(irra_model):
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch, 3, 48, 32\)"):
        irra_model.get_image_features(pixel_values=torch.randn(1, 3, 384, 128))
    with pytest.raises(ValueError, match="needs input_ids"):
        irra_model()


def test_save_and_reload_in_fp32(irra_model, tmp_path):
    irra_model.save_pretrained(tmp_path)
    loaded = IRRAModel.from_pretrained(tmp_path).eval()
    assert loaded.dtype == torch.float32
    ids = torch.tensor([[49406, 320, 49407]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.get_text_features(input_ids=ids).pooler_output, irra_model.get_text_features(input_ids=ids).pooler_output
        )
