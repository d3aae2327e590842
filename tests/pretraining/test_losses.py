"""Each pre-training loss against a direct transcription of its definition on hand-made inputs."""

import math

import pytest
import torch

from modeling_ivt import IVTForPreTraining, cmpm_loss
from tests.pretraining.conftest import tiny_pretraining_config
from training import loss as losses
from training.loss import PreTrainingObjective, itc_loss, masked_language_modeling_loss, sample_hard_negatives


def transcribed_itc(image, text, pair_ids, temperature):
    """The released ITC written out: cosine / temperature, soft targets by pair id, mean of the two CEs."""

    def normalise(rows):
        return [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in rows]

    image, text = normalise(image), normalise(text)
    n = len(pair_ids)

    def direction(queries, keys):
        total = 0.0
        for i in range(n):
            logits = [sum(a * b for a, b in zip(queries[i], keys[j])) / temperature for j in range(n)]
            log_norm = math.log(sum(math.exp(v) for v in logits))
            positives = [j for j in range(n) if pair_ids[j] == pair_ids[i]]
            total += -sum((logits[j] - log_norm) / len(positives) for j in positives)
        return total / n

    return (direction(image, text) + direction(text, image)) / 2


def test_itc_loss_matches_transcription_with_shared_pair_ids():
    image = [[1.0, 0.0, 2.0], [0.5, 1.0, 0.0], [0.0, -1.0, 1.0], [2.0, 2.0, 1.0]]
    text = [[0.9, 0.1, 1.5], [0.0, 2.0, 0.2], [0.3, -1.0, 0.8], [1.0, 0.0, 0.0]]
    pair_ids = [7, 3, 3, 9]
    temperature = 0.25
    expected = transcribed_itc(image, text, pair_ids, temperature)
    image_t = torch.nn.functional.normalize(torch.tensor(image), dim=-1)
    text_t = torch.nn.functional.normalize(torch.tensor(text), dim=-1)
    ids = torch.tensor(pair_ids)
    loss, logits_per_image, logits_per_text = itc_loss(image_t, text_t, image_t, text_t, ids, ids, torch.tensor(0.25))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(logits_per_text, logits_per_image.t())


def test_itc_loss_of_a_shard_against_gathered_columns_is_its_rows_of_the_full_loss():
    torch.manual_seed(1)
    image = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    ids = torch.arange(6)
    full, _, _ = itc_loss(image, text, image, text, ids, ids, torch.tensor(0.1))
    halves = [
        itc_loss(image[s], text[s], image, text, ids[s], ids, torch.tensor(0.1))[0] for s in (slice(0, 3), slice(3, 6))
    ]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(full.item(), rel=1e-6)


def test_itc_logits_and_loss_stay_fp32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(16, 64, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(image + 0.5 * torch.randn(16, 64, generator=generator), dim=-1)
    pair_ids = torch.arange(16)
    temperature = torch.tensor(0.07)
    expected = itc_loss(image, text, image, text, pair_ids, pair_ids, temperature)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = itc_loss(image, text, image, text, pair_ids, pair_ids, temperature)
    assert got[1].dtype == torch.float32
    for value, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-6)


def test_hard_negatives_are_never_positives_even_when_positives_dominate():
    logits = torch.tensor([[50.0, 49.0, -3.0, -4.0], [0.0, 60.0, 60.0, 1.0], [9.0, 9.0, 9.0, 9.0]])
    positives = torch.tensor([[True, True, False, False], [False, True, True, False], [False, False, True, False]])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(logits, positives, generator) for _ in range(300)])
    assert not positives.gather(1, draws.t()).any()
    # harder negatives are drawn more often: row 0 prefers column 2 (logit -3) over column 3 (-4)
    assert (draws[:, 0] == 2).float().mean() > 0.6
    assert set(draws[:, 2].tolist()) == {0, 1, 3}


def test_hard_negatives_refuse_a_row_without_negatives():
    with pytest.raises(ValueError, match="row 1 has no negative"):
        sample_hard_negatives(torch.zeros(2, 2), torch.tensor([[True, False], [True, True]]))


def test_mlm_loss_is_mean_cross_entropy_over_masked_positions_only():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], [[1.0, 3.0, 0.5], [0.2, 0.1, 4.0]]])
    labels = torch.tensor([[0, -100], [2, 1]])

    def neg_log_softmax(row, index):
        return -(row[index] - math.log(sum(math.exp(v) for v in row)))

    expected = (
        neg_log_softmax([2.0, 0.0, -1.0], 0)
        + neg_log_softmax([1.0, 3.0, 0.5], 2)
        + neg_log_softmax([0.2, 0.1, 4.0], 1)
    ) / 3
    assert masked_language_modeling_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert masked_language_modeling_loss(logits, torch.full_like(labels, -100)).item() == 0.0


def _batch(batch_size=4, length=7):
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(1000, 5000, (batch_size, length), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 4:] = 0
    input_ids[1, 4:] = 0
    input_ids[1, 3] = 102
    mlm_input_ids, mlm_labels = input_ids.clone(), torch.full_like(input_ids, -100)
    mlm_labels[:, 2] = input_ids[:, 2]
    mlm_input_ids[:, 2] = 103
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=torch.randn(batch_size, 3, 48, 32, generator=generator),
        pair_ids=torch.tensor([0, 1, 2, 2])[:batch_size],
        mlm_input_ids=mlm_input_ids,
        mlm_labels=mlm_labels,
    )


def objective(config) -> PreTrainingObjective:
    """The pre-training model and its single-process loss, in evaluation mode."""
    return PreTrainingObjective(IVTForPreTraining(config)).eval()


def test_itm_loss_runs_the_fusion_encoder_on_positives_and_both_kinds_of_hard_negatives(monkeypatch):
    torch.manual_seed(0)
    step = objective(tiny_pretraining_config())
    model = step.model
    chosen = {}

    def fixed_negatives(logits, positive_mask, generator=None):
        index = torch.tensor([2, 3, 0, 1]) if "text" not in chosen else torch.tensor([1, 0, 1, 0])
        chosen["text" if "text" not in chosen else "image"] = index
        assert not positive_mask.gather(1, index.view(-1, 1)).any()
        return index

    monkeypatch.setattr(losses, "sample_hard_negatives", fixed_negatives)
    batch = _batch()
    with torch.no_grad():
        out = step(**batch)
        text_embeds = model.ivt.text_embeddings(batch["input_ids"])
        text_hidden, _ = model._encode(text_embeds, batch["attention_mask"], "text", drop=False, generator=None)
        image_hidden, _ = model._encode(
            model.ivt.image_embeddings(batch["pixel_values"]), None, "image", drop=False, generator=None
        )
        logits, labels = [], []
        triples = [(i, i, 1) for i in range(4)]
        triples += [(int(chosen["text"][i]), i, 0) for i in range(4)]
        triples += [(i, int(chosen["image"][i]), 0) for i in range(4)]
        for text_index, image_index, label in triples:
            mask = batch["attention_mask"][text_index : text_index + 1]
            fused = model.fusion_encoder(
                text_hidden[text_index : text_index + 1], mask, image_hidden[image_index : image_index + 1]
            )
            logits.append(model.itm_head(fused[:, 0])[0].tolist())
            labels.append(label)
    expected = sum(-(row[y] - math.log(math.exp(row[0]) + math.exp(row[1]))) for row, y in zip(logits, labels)) / 12
    torch.testing.assert_close(out.itm_logits, torch.tensor(logits), atol=1e-5, rtol=1e-5)
    assert out.itm_loss.item() == pytest.approx(expected, rel=1e-5)


def test_total_loss_is_the_configured_weighted_sum_and_cmpm_is_optional():
    torch.manual_seed(0)
    config = tiny_pretraining_config(
        itc_loss_weight=2.0, itm_loss_weight=0.5, mlm_loss_weight=3.0, cmpm_loss_weight=0.25
    )
    step = objective(config)
    batch = _batch()
    with torch.no_grad():
        out = step(**batch)
        features = step.model.ivt(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
        )
    expected_cmpm = cmpm_loss(
        features.vision_model_output.pooler_output, features.text_model_output.pooler_output, batch["pair_ids"]
    )
    torch.testing.assert_close(out.cmpm_loss, expected_cmpm)
    expected = 2.0 * out.itc_loss + 0.5 * out.itm_loss + 3.0 * out.mlm_loss + 0.25 * out.cmpm_loss
    torch.testing.assert_close(out.loss, expected)
    assert objective(tiny_pretraining_config())(**batch).cmpm_loss is None


def test_temperature_starts_at_the_spec_value_and_is_clamped():
    step = objective(tiny_pretraining_config())
    assert step.model.temperature.item() == pytest.approx(0.5)
    batch = _batch()
    with torch.no_grad():
        step.model.temperature.fill_(3.0)
        assert step(**batch).temperature.item() == pytest.approx(0.5)
        step.model.temperature.fill_(-1.0)
        out = step(**batch)
    assert out.temperature.item() == pytest.approx(0.001)
    cosine = out.text_embeds @ out.image_embeds.t()
    torch.testing.assert_close(out.logits_per_text, cosine / 0.001)


def test_mismatched_inputs_are_refused_with_a_clear_error():
    step = objective(tiny_pretraining_config())
    batch = _batch()
    with pytest.raises(ValueError, match="4 captions and 3 images"):
        step.model(batch["input_ids"], batch["pixel_values"][:3], batch["attention_mask"])
    with pytest.raises(ValueError, match="4 pairs and 3 pair_ids"):
        step(**{**batch, "pair_ids": batch["pair_ids"][:3]})
    with pytest.raises(ValueError, match="mlm_input_ids and mlm_labels together"):
        step(**{**batch, "mlm_labels": None})


def test_mlm_logits_cover_the_masked_positions_and_match_the_head_on_the_full_sequence():
    torch.manual_seed(0)
    step = objective(tiny_pretraining_config())
    model = step.model
    batch = _batch()
    batch["mlm_labels"][0, 4] = batch["input_ids"][0, 4]
    with torch.no_grad():
        out = step(**batch)
        masked_text, _ = model._encode(
            model.ivt.text_embeddings(batch["mlm_input_ids"]),
            batch["attention_mask"],
            "text",
            drop=False,
            generator=None,
        )
        image_hidden, _ = model._encode(
            model.ivt.image_embeddings(batch["pixel_values"]), None, "image", drop=False, generator=None
        )
        full = model.mlm_head(model.fusion_encoder(masked_text, batch["attention_mask"], image_hidden))
    positions = (batch["mlm_labels"] != -100).nonzero().tolist()
    assert out.mlm_logits.shape == (5, 30522) and positions[:2] == [[0, 2], [0, 4]]
    torch.testing.assert_close(out.mlm_logits, torch.stack([full[row, column] for row, column in positions]))
    torch.testing.assert_close(out.mlm_loss, masked_language_modeling_loss(full, batch["mlm_labels"]))


def test_bmm_token_dropping_applies_to_the_pairs_but_not_to_the_masked_captions():
    torch.manual_seed(0)
    model = IVTForPreTraining(tiny_pretraining_config(token_drop_ratio=0.5, cmpm_loss_weight=1.0, drop_path_rate=0.0))
    step = PreTrainingObjective(model).train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = _batch()
    dropped = step(**batch, generator=torch.Generator().manual_seed(1))
    dropped.loss.backward()
    model.config.token_drop_ratio = 0.0
    kept = step(**batch, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(dropped.text_embeds, kept.text_embeds)
    # every masked token is still predicted (the image tokens the fusion encoder sees are the dropped ones)
    assert dropped.mlm_logits.shape[0] == (batch["mlm_labels"] != -100).sum() == kept.mlm_logits.shape[0]
    assert torch.isfinite(dropped.mlm_loss) and torch.isfinite(dropped.cmpm_loss)
    assert model.temperature.grad is not None
