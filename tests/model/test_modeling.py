import math

import pytest
import torch

from modeling_ivt import IVTModel, cmpm_loss
from modeling_ivt.modeling_ivt import drop_tokens

from .conftest import tiny_config


def test_config_defaults_are_the_released_base_model():
    from modeling_ivt import IVTConfig

    config = IVTConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        768, 12, 12, 3072,
    )
    assert tuple(config.image_size) == (384, 128) and config.patch_size == 16 and config.patch_stride == 12
    assert config.patch_grid == (31, 10) and config.num_image_tokens == 311
    assert config.vocab_size == 30522 and config.max_position_embeddings == 512
    assert config.drop_path_rate == 0.1 and config.token_drop_ratio == 0.2
    assert config.layer_norm_eps == 1e-6 and config.text_layer_norm_eps == 1e-12
    assert IVTConfig(patch_stride=16).num_image_tokens == 193


def test_base_model_parameter_count_matches_the_spec():
    from modeling_ivt import IVTConfig

    with torch.device("meta"):
        model = IVTModel(IVTConfig())
    total = sum(p.numel() for p in model.parameters())
    assert abs(total / 1e6 - 166.6) < 0.1


def test_feature_shapes_and_dtypes(model, config):
    input_ids = torch.randint(1000, 2000, (3, 7))
    pixel_values = torch.randn(3, 3, *config.image_size)
    with torch.no_grad():
        text = model.get_text_features(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        image = model.get_image_features(pixel_values=pixel_values)
        out = model(input_ids=input_ids, pixel_values=pixel_values)
    assert text.pooler_output.shape == (3, 32) and text.last_hidden_state.shape == (3, 7, 32)
    assert image.pooler_output.shape == (3, 32) and image.last_hidden_state.shape == (3, config.num_image_tokens, 32)
    assert image.pooler_output.dtype == torch.float32
    assert out.loss is None
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.logits_per_text, out.text_embeds @ out.image_embeds.t())
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.t())
    # the pooled output is the un-normalised [CLS] after the final norm
    torch.testing.assert_close(text.pooler_output, text.last_hidden_state[:, 0])
    assert not torch.allclose(text.pooler_output.norm(dim=-1), torch.ones(3))


def test_sdpa_and_eager_agree(config):
    torch.manual_seed(1)
    sdpa = IVTModel(config).eval()
    eager = IVTModel(tiny_config()).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    input_ids = torch.randint(1000, 2000, (2, 9))
    attention_mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    pixel_values = torch.randn(2, 3, *config.image_size)
    with torch.no_grad():
        for m in (sdpa, eager):
            m.outputs = m(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    torch.testing.assert_close(sdpa.outputs.text_embeds, eager.outputs.text_embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa.outputs.image_embeds, eager.outputs.image_embeds, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_caption_alone_equals_caption_in_padded_batch(model, processor, captions, attn_implementation):
    model.set_attn_implementation(attn_implementation)
    batch = processor(text=captions)
    assert batch["attention_mask"].min() == 0
    with torch.no_grad():
        together = model.get_text_features(**batch).pooler_output
        for i, caption in enumerate(captions):
            alone = model.get_text_features(**processor(text=[caption])).pooler_output
            torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=0)


def test_token_dropping_keeps_cls_respects_ratio_and_is_seeded():
    batch, length, width = 64, 40, 4
    hidden = torch.arange(length, dtype=torch.float32).view(1, length, 1).expand(batch, length, width).clone()
    lengths = torch.randint(5, length + 1, (batch,))
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()
    out, out_mask = drop_tokens(hidden, mask, 0.2, protect_last_token=True, generator=torch.Generator().manual_seed(7))
    again, _ = drop_tokens(hidden, mask, 0.2, protect_last_token=True, generator=torch.Generator().manual_seed(7))
    other, _ = drop_tokens(hidden, mask, 0.2, protect_last_token=True, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(out, again)
    assert not torch.equal(out, other)
    assert out_mask is not None
    dropped_counts = []
    for i in range(batch):
        kept = out[i, out_mask[i].bool(), 0].long().tolist()
        n = int(lengths[i])
        assert kept[0] == 0, "[CLS] must never be dropped"
        assert kept[-1] == n - 1, "the final [SEP] must never be dropped"
        assert kept == sorted(kept) and len(set(kept)) == len(kept)
        assert all(position < n for position in kept), "padding must never come back as a token"
        dropped = n - len(kept)
        assert 0 <= dropped <= math.floor(0.2 * n)
        dropped_counts.append(dropped)
    assert max(dropped_counts) > 0 and min(dropped_counts) == 0


def test_image_token_dropping_varies_per_sample_and_only_in_training(config):
    torch.manual_seed(0)
    model = IVTModel(tiny_config(token_drop_ratio=0.5, drop_path_rate=0.0)).train()
    pixel_values = torch.randn(1, 3, *config.image_size)
    lengths = {
        model._image_features(pixel_values, torch.Generator().manual_seed(seed)).last_hidden_state.shape[1]
        for seed in range(12)
    }
    n = config.num_image_tokens
    assert len(lengths) > 1 and min(lengths) >= n - math.floor(0.5 * n) and max(lengths) <= n
    model.eval()
    pixel_values = torch.randn(8, 3, *config.image_size)
    with torch.no_grad():
        first = model.get_image_features(pixel_values).last_hidden_state
        second = model.get_image_features(pixel_values).last_hidden_state
    assert first.shape[1] == config.num_image_tokens
    torch.testing.assert_close(first, second)


def test_training_forward_is_reproducible_from_a_seed(config, processor, captions, images):
    torch.manual_seed(0)
    model = IVTModel(config).train()
    batch = processor(text=captions, images=images)
    losses = []
    for _ in range(2):
        torch.manual_seed(123)
        out = model(**batch, person_ids=torch.tensor([1, 2, 1]))
        losses.append(out.loss)
    torch.testing.assert_close(losses[0], losses[1])


def _cmpm_by_hand(f, g, pids):
    """The spec's formula, one element at a time."""
    n = len(pids)
    y = [[1.0 if pids[i] == pids[j] else 0.0 for j in range(n)] for i in range(n)]
    q = [[y[i][j] / math.sqrt(sum(y[j])) for j in range(n)] for i in range(n)]

    def direction(a, b):
        total = 0.0
        for i in range(n):
            logits = [float(a[i] @ (b[j] / b[j].norm())) for j in range(n)]
            top = max(logits)
            log_z = top + math.log(sum(math.exp(v - top) for v in logits))
            for j in range(n):
                p = math.exp(logits[j] - log_z)
                total += p * ((logits[j] - log_z) - math.log(q[i][j] + 1e-8))
        return total / n

    return direction(f, g) + direction(g, f)


def test_cmpm_equals_a_direct_transcription_with_several_positives():
    torch.manual_seed(3)
    pids = [4, 9, 4, 4, 17, 9]
    f, g = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    expected = _cmpm_by_hand(f, g, pids)
    got = cmpm_loss(f, g, torch.tensor(pids))
    assert abs(got.item() - expected) < 1e-5


def test_cmpm_rewards_matching_pairs():
    torch.manual_seed(0)
    pids = torch.tensor([0, 1, 2, 3])
    features = torch.randn(4, 16) * 5
    matched = cmpm_loss(features, features + 0.01 * torch.randn(4, 16), pids)
    shuffled = cmpm_loss(features, features[[1, 2, 3, 0]], pids)
    assert matched < shuffled


def test_cmpm_under_bf16_autocast_is_the_fp32_loss():
    """Autocast would run the projections in bf16 (about 1e-3 relative error here); the loss must stay fp32."""
    generator = torch.Generator().manual_seed(0)
    image_features = 0.3 * torch.randn(32, 96, generator=generator)
    text_features = image_features + 0.3 * torch.randn(32, 96, generator=generator)
    person_ids = torch.arange(32) // 2
    expected = cmpm_loss(image_features, text_features, person_ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = cmpm_loss(image_features, text_features, person_ids)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected, rtol=1e-6, atol=0)


def test_loss_is_returned_with_person_ids_and_backpropagates(model, processor, captions, images):
    model.train()
    out = model(**processor(text=captions, images=images), person_ids=torch.tensor([3, 5, 3]))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.image_embeddings.patch_embedding.weight.grad is not None
    assert model.encoder.layers[0].text_mlp.fc1.weight.grad is not None
    with pytest.raises(ValueError, match="person_ids"):
        model(**processor(text=captions, images=images), return_loss=True)


def test_gradient_checkpointing_gives_the_same_gradients(config, processor, captions, images):
    batch = processor(text=captions, images=images)
    pids = torch.tensor([1, 2, 1])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = IVTModel(tiny_config(token_drop_ratio=0.0)).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        torch.manual_seed(42)
        model(**batch, person_ids=pids).loss.backward()
        grads.append(model.encoder.layers[0].self_attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_drop_path_is_linear_over_depth_and_random_in_training():
    model = IVTModel(tiny_config(num_hidden_layers=3, drop_path_rate=0.3, token_drop_ratio=0.0))
    assert [layer.drop_path_rate for layer in model.encoder.layers] == pytest.approx([0.0, 0.15, 0.3])
    pixel_values = torch.randn(16, 3, 48, 32)
    model.train()
    torch.manual_seed(0)
    a = model.get_image_features(pixel_values).pooler_output
    torch.manual_seed(1)
    b = model.get_image_features(pixel_values).pooler_output
    assert not torch.allclose(a, b)


def test_bf16_autocast_on_cpu_is_close_to_fp32(model, processor, captions, images):
    batch = processor(text=captions, images=images)
    with torch.no_grad():
        reference = model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**batch)
    assert torch.isfinite(low.logits_per_text).all()
    cosine = torch.nn.functional.cosine_similarity(low.image_embeds.float(), reference.image_embeds, dim=-1)
    assert cosine.min() > 0.99


def test_bad_inputs_get_clear_errors(model):
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model.get_image_features(torch.randn(1, 3, 384, 128))
    with pytest.raises(ValueError, match="512 text"):
        model.get_text_features(torch.ones(1, 600, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(hidden_size=30, num_attention_heads=4)


def test_save_and_load_round_trip(tmp_path, model, processor, captions, images):
    from transformers import AutoModel

    batch = processor(text=captions, images=images)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, IVTModel)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits_per_text, model(**batch).logits_per_text)
