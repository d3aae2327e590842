"""IRRA's objectives against their definitions: SDM, the ID loss, IRR masking and the IRR head."""

import math

import pytest
import torch

from modeling_ivt import cmpm_loss
from training.irr import IRRHead, mask_caption_tokens
from training.loss import LOSS_NAMES, RetrievalLoss, RetrievalTrainingOutput, identity_loss, masked_token_loss, sdm_loss

MASK_ID, START_ID, END_ID = 49405, 49406, 49407


def sdm_by_the_formula(image, text, person_ids, scale, epsilon=1e-8):
    """L = mean_i KL(p_i2t || q_i) + mean_i KL(p_t2i || q_i), written out element by element."""
    n = len(person_ids)

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    def mean_kl(queries, keys):
        total = 0.0
        for i in range(n):
            logits = [scale * cosine(queries[i], keys[j]) for j in range(n)]
            top = max(logits)
            norm = sum(math.exp(v - top) for v in logits)
            positives = sum(person_ids[i] == person_ids[k] for k in range(n))
            for j in range(n):
                p = math.exp(logits[j] - top) / norm
                q = (person_ids[i] == person_ids[j]) / positives
                total += p * (math.log(p) - math.log(q + epsilon))
        return total / n

    return mean_kl(image, text) + mean_kl(text, image)


def test_sdm_matches_the_formula_with_several_positives_per_person():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    text = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    person_ids = [4, 4, 4, 9, 2, 2, 9]  # 3, 2 and 2 pairs of the same person, in no particular order
    for scale in (50.0, 1.0):
        expected = sdm_by_the_formula(image.tolist(), text.tolist(), person_ids, scale)
        got = sdm_loss(image, text, torch.tensor(person_ids), logit_scale=scale)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_sdm_of_perfectly_matched_distinct_people_is_near_zero_and_of_swapped_ones_large():
    eye = torch.eye(3)
    assert sdm_loss(eye, eye, torch.tensor([0, 1, 2]), logit_scale=50.0).item() == pytest.approx(0.0, abs=1e-6)
    # every image closest to another person's caption: each direction puts ~all mass where q is 0, KL ~ -log(1e-8)
    swapped = sdm_loss(eye, eye[[1, 2, 0]], torch.tensor([0, 1, 2]), logit_scale=50.0).item()
    assert swapped == pytest.approx(2 * -math.log(1e-8), rel=1e-3)


def test_sdm_is_computed_in_fp32_from_bf16_features():
    generator = torch.Generator().manual_seed(1)
    image, text = torch.randn(2, 6, 8, generator=generator)
    person_ids = torch.tensor([0, 0, 1, 1, 2, 2])
    got = sdm_loss(image.bfloat16(), text.bfloat16(), person_ids, logit_scale=50.0)
    assert got.dtype == torch.float32
    expected = sdm_loss(image.bfloat16().float(), text.bfloat16().float(), person_ids, logit_scale=50.0)
    torch.testing.assert_close(got, expected)


def test_identity_loss_is_the_mean_of_image_and_text_cross_entropy():
    image_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    text_logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    class_ids = torch.tensor([0, 2])
    image_ce = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(math.exp(3) / (1 + math.e + math.exp(3)))) / 2
    text_ce = math.log(3)  # uniform logits over three classes
    assert identity_loss(image_logits, text_logits, class_ids).item() == pytest.approx((image_ce + text_ce) / 2)


def test_masked_token_loss_ignores_unlabelled_positions_and_is_zero_without_labels():
    logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 0, 2])
    expected = (-math.log(math.exp(5) / (math.exp(5) + 2)) + math.log(3)) / 2
    assert masked_token_loss(logits, labels).item() == pytest.approx(expected)
    assert masked_token_loss(logits, torch.zeros(3, dtype=torch.long)).item() == 0.0


def captions(num: int, seed: int) -> torch.Tensor:
    """IRRA-format ids: start, 3-40 word ids, end, zero padding to 77 (word ids include the extremes 1 and 49404)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.zeros(num, 77, dtype=torch.long)
    for row in rows:
        length = int(torch.randint(3, 41, (), generator=generator))
        words = torch.randint(1, MASK_ID, (length,), generator=generator)
        words[0], words[-1] = 1, MASK_ID - 1
        row[: length + 2] = torch.cat([torch.tensor([START_ID]), words, torch.tensor([END_ID])])
    return rows


def test_masking_never_touches_special_tokens_or_padding_and_labels_the_original_ids():
    input_ids = captions(300, seed=0)
    for seed in range(3):
        masked, labels = mask_caption_tokens(input_ids, MASK_ID, torch.Generator().manual_seed(seed))
        special = (input_ids == 0) | (input_ids >= MASK_ID)
        assert torch.equal(masked[special], input_ids[special])
        assert not labels[special].any()
        selected = labels != 0
        assert torch.equal(labels[selected], input_ids[selected])
        assert torch.equal(masked[~selected], input_ids[~selected])
        assert (selected.sum(dim=1) >= 1).all()


def test_a_caption_with_nothing_selected_gets_its_first_word_masked():
    input_ids = captions(5, seed=1)
    masked, labels = mask_caption_tokens(input_ids, MASK_ID, torch.Generator().manual_seed(0), probability=0.0)
    expected_labels = torch.zeros_like(input_ids)
    expected_labels[:, 1] = input_ids[:, 1]
    assert torch.equal(labels, expected_labels)
    assert (masked[:, 1] == MASK_ID).all()
    assert torch.equal(masked[:, 2:], input_ids[:, 2:]) and torch.equal(masked[:, 0], input_ids[:, 0])
    # a caption without any word token has nothing to mask
    empty = torch.tensor([[START_ID, END_ID, 0, 0]])
    masked, labels = mask_caption_tokens(empty, MASK_ID, torch.Generator().manual_seed(0), probability=0.0)
    assert torch.equal(masked, empty) and not labels.any()


def test_masking_selects_15_percent_and_splits_them_80_10_10():
    input_ids = captions(2000, seed=2)
    masked, labels = mask_caption_tokens(input_ids, MASK_ID, torch.Generator().manual_seed(3))
    words = (input_ids > 0) & (input_ids < MASK_ID)
    selected = labels != 0
    num_words, num_selected = int(words.sum()), int(selected.sum())
    assert num_words > 30000
    # the at-least-one rule adds (0.85 ** length) of a token per caption: well under 0.5 % here
    assert num_selected / num_words == pytest.approx(0.15, abs=0.006)
    became_mask = (masked[selected] == MASK_ID).float().mean().item()
    kept = (masked[selected] == input_ids[selected]).float().mean().item()
    replaced = masked[selected & (masked != MASK_ID) & (masked != input_ids)]
    assert became_mask == pytest.approx(0.8, abs=0.015)
    assert kept == pytest.approx(0.1, abs=0.01)
    assert len(replaced) / num_selected == pytest.approx(0.1, abs=0.01)
    assert replaced.min() >= 1 and replaced.max() < MASK_ID
    assert len(replaced.unique()) > 0.95 * len(replaced)  # uniform over ~49k ids: almost no repeats


def test_masking_is_a_function_of_the_generator():
    input_ids = captions(4, seed=3)
    first = mask_caption_tokens(input_ids, MASK_ID, torch.Generator().manual_seed(11))
    again = mask_caption_tokens(input_ids, MASK_ID, torch.Generator().manual_seed(11))
    other = mask_caption_tokens(input_ids, MASK_ID, torch.Generator().manual_seed(12))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])


def test_irr_head_has_irra_names_and_init_and_predicts_only_labelled_positions():
    torch.manual_seed(0)
    head = IRRHead(embed_dim=128, vocab_size=300, depth=4)
    names = set(head.state_dict())
    for name in (
        "cross_attn.in_proj_weight",
        "cross_attn.out_proj.bias",
        "cross_modal_transformer.resblocks.3.attn.in_proj_bias",
        "cross_modal_transformer.resblocks.0.mlp.c_fc.weight",
        "cross_modal_transformer.resblocks.0.mlp.c_proj.weight",
        "cross_modal_transformer.resblocks.0.ln_2.weight",
        "ln_pre_t.weight",
        "ln_pre_i.bias",
        "ln_post.weight",
        "mlm_head.dense.weight",
        "mlm_head.ln.weight",
        "mlm_head.fc.bias",
    ):
        assert name in names, name
    assert "cross_modal_transformer.resblocks.4.ln_1.weight" not in names
    assert head.cross_attn.num_heads == 2 and head.cross_modal_transformer.resblocks[0].attn.num_heads == 2
    # width 128, 4 blocks: 128^-0.5 = 0.0884 in-projections; 0.0884 / sqrt(8) = 0.03125 out-projections and c_proj;
    # (2 * 128)^-0.5 = 0.0625 for c_fc
    block = head.cross_modal_transformer.resblocks[2]
    for tensor, std in (
        (block.attn.in_proj_weight, 0.0884),
        (head.cross_attn.in_proj_weight, 0.0884),
        (block.attn.out_proj.weight, 0.03125),
        (block.mlp.c_proj.weight, 0.03125),
        (block.mlp.c_fc.weight, 0.0625),
        (head.mlm_head.dense.weight, 0.0625),
        (head.mlm_head.fc.weight, 0.03125),
    ):
        assert tensor.std().item() == pytest.approx(std, rel=0.05)
        assert abs(tensor.mean().item()) < 0.1 * std

    text_tokens, image_tokens = torch.randn(3, 9, 128), torch.randn(3, 14, 128)
    labels = torch.zeros(3, 9, dtype=torch.long)
    labels[0, 1], labels[1, 4], labels[1, 5], labels[2, 8] = 17, 3, 299, 42
    logits, kept_labels = head(text_tokens, image_tokens, labels)
    assert logits.shape == (4, 300) and kept_labels.tolist() == [17, 3, 299, 42]

    # the definition: the head over every position, cross-entropy where the label is not 0
    keys = head.ln_pre_i(image_tokens)
    attended = head.cross_attn(head.ln_pre_t(text_tokens), keys, keys)[0]
    hidden = attended
    for resblock in head.cross_modal_transformer.resblocks:
        hidden = hidden + resblock.attn(resblock.ln_1(hidden), resblock.ln_1(hidden), resblock.ln_1(hidden))[0]
        hidden = hidden + resblock.mlp(resblock.ln_2(hidden))
    all_logits = head.mlm_head(head.ln_post(hidden))
    expected = torch.nn.functional.cross_entropy(all_logits.reshape(-1, 300), labels.reshape(-1), ignore_index=0)
    torch.testing.assert_close(masked_token_loss(logits, kept_labels), expected)


def test_retrieval_loss_of_one_process_is_each_selected_term_and_refuses_an_unknown_one():
    generator = torch.Generator().manual_seed(0)
    output = RetrievalTrainingOutput(
        image_embeds=torch.randn(4, 8, generator=generator),
        text_embeds=torch.randn(4, 8, generator=generator),
        image_logits=torch.randn(4, 3, generator=generator),
        text_logits=torch.randn(4, 3, generator=generator),
        irr_logits=torch.randn(5, 11, generator=generator),
        irr_labels=torch.tensor([3, 0, 7, 7, 0]),
    )
    person_ids, class_ids = torch.tensor([5, 9, 5, 2]), torch.tensor([1, 2, 1, 0])
    terms = RetrievalLoss(LOSS_NAMES, logit_scale=50.0)(output, person_ids, class_ids)
    assert list(terms) == list(LOSS_NAMES)
    torch.testing.assert_close(terms["sdm"], sdm_loss(output.image_embeds, output.text_embeds, person_ids, 50.0))
    torch.testing.assert_close(terms["cmpm"], cmpm_loss(output.image_embeds, output.text_embeds, person_ids))
    torch.testing.assert_close(terms["id"], identity_loss(output.image_logits, output.text_logits, class_ids))
    torch.testing.assert_close(terms["irr"], masked_token_loss(output.irr_logits, output.irr_labels))
    with pytest.raises(ValueError, match="unknown loss 'itc'"):
        RetrievalLoss(("sdm", "itc"), logit_scale=50.0)
