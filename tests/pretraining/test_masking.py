"""MLM masking as the released code does it, and the pre-training collator."""

import random

import pytest
import torch

from tests.pretraining.conftest import make_collator
from training.loss import PreTrainingObjective
from training.pretraining_data import MaskingSettings, choose_masked_positions, clean_caption, mask_captions


def test_captions_are_cleaned_as_released_and_cut_at_50_words():
    assert clean_caption("A Woman, in a RED coat; (carrying) a bag!") == "a woman in a red coat carrying a bag"
    # apostrophes are deleted, "-" and "/" become spaces, other symbols stay, "<person>" becomes "person"
    assert clean_caption("The man's T-shirt/jacket: blue & white.") == "the mans t shirt jacket blue & white"
    assert clean_caption("<PERSON> walks  by") == "person walks by"
    long_caption = " ".join(f"Word{i}." for i in range(80))
    cleaned = clean_caption(long_caption)
    assert cleaned.split() == [f"word{i}" for i in range(50)]


def _tokens(num_words):
    return ["[CLS]"] + [f"w{i}" for i in range(num_words)]


# budget = min(8, max(1, round(0.25 x tokens))) with [CLS] counted, as released: 2 tokens -> round(0.5) = 0 -> 1,
# 4 -> 1, 11 -> round(2.75) = 3, 32 -> 8, 61 -> 8 (capped)
@pytest.mark.parametrize("num_words,budget", [(1, 1), (3, 1), (10, 3), (31, 8), (60, 8)])
def test_budget_is_a_quarter_of_the_tokens_with_cls_at_least_one_at_most_eight_never_cls(num_words, budget):
    settings = MaskingSettings()
    for tokens in (_tokens(num_words), _tokens(num_words) + ["[SEP]"]):  # a final [SEP] is neither counted nor masked
        for seed in range(100):
            positions = choose_masked_positions(tokens, settings, random.Random(seed))
            assert len(positions) == budget
            assert 0 not in positions and max(positions) <= num_words


def test_masking_takes_whole_words_chosen_by_token_position():
    tokens = ["[CLS]", "ab", "##cd", "ef", "##gh", "##ij", "kl", "##mn"]
    settings = MaskingSettings(probability=0.3, span_probability=0.0)  # budget round(0.3 * 8) = 2
    seen, in_long_word = set(), 0
    for seed in range(2000):
        positions = tuple(choose_masked_positions(tokens, settings, random.Random(seed)))
        if positions in ((1, 2), (6, 7)):
            seen.add(positions)
        else:  # the 3-token word overshoots the budget and is cut: still inside that one word
            assert set(positions) <= {3, 4, 5} and len(positions) == 2
            in_long_word += 1
    assert seen == {(1, 2), (6, 7)}
    # the first position visited is uniform over the 7 tokens: the 3-token word is hit 3/7 of the time (1/3 if the
    # words, not the tokens, were drawn)
    assert 0.39 < in_long_word / 2000 < 0.47


def test_spans_of_consecutive_words_appear_with_the_span_probability():
    tokens = _tokens(30)
    budget_three = MaskingSettings(probability=0.1, max_span_tokens=3)

    def share_of_three_word_runs(span_probability):
        settings = MaskingSettings(probability=0.1, max_span_tokens=3, span_probability=span_probability)
        runs = 0
        for seed in range(400):
            positions = choose_masked_positions(tokens, settings, random.Random(seed))
            runs += positions[2] - positions[0] == 2
        return runs / 400

    assert budget_three.span_probability == 0.2
    assert share_of_three_word_runs(0.0) < 0.05
    assert share_of_three_word_runs(1.0) > 0.4
    assert 0.05 < share_of_three_word_runs(0.2) < 0.3


def test_replacement_is_80_percent_mask_10_percent_random_10_percent_kept(processor):
    tokenizer = processor.tokenizer
    captions = [
        clean_caption(f"the person number {i} wears a long blue coat and carries a black umbrella") for i in range(400)
    ]
    batch = tokenizer(captions, padding=True, return_tensors="pt")
    masked, labels = mask_captions(
        batch["input_ids"], batch["attention_mask"], tokenizer, MaskingSettings(), random.Random(0)
    )
    selected = labels != -100
    torch.testing.assert_close(labels[selected], batch["input_ids"][selected])
    assert torch.equal(masked[~selected], batch["input_ids"][~selected])
    chosen = masked[selected]
    as_mask = (chosen == tokenizer.mask_token_id).float().mean().item()
    kept = (chosen == labels[selected]).float().mean().item()
    assert 0.76 < as_mask < 0.84
    assert 0.07 < kept < 0.14
    assert 0.07 < 1 - as_mask - kept < 0.14
    assert not set(chosen.tolist()) & (set(tokenizer.all_special_ids) - {tokenizer.mask_token_id})


def test_collator_builds_model_inputs_from_corpus_pairs(processor, pairs, pretraining_model):
    collator = make_collator(processor, seed=0)
    batch = collator(pairs)
    assert torch.equal(batch["pair_ids"], torch.arange(6))
    assert batch["pixel_values"].shape == (6, 3, 48, 32)
    decoded = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert decoded == "a person wearing a red jacket and blue trousers walking away from the camera"
    assert ((batch["mlm_labels"] != -100).sum(dim=1) == 4).all()  # [CLS] + 14 tokens -> round(3.75)
    assert processor.tokenizer.sep_token_id not in batch["input_ids"]  # released: [CLS] + caption, no [SEP]
    assert (batch["input_ids"][:, 0] == processor.tokenizer.cls_token_id).all()
    long_pairs = [{**pair, "caption": "a tall man " * 30} for pair in pairs]  # 90 words, cut at 50, then at 49 tokens
    assert collator(long_pairs)["input_ids"].shape[1] == 50
    with torch.no_grad():
        out = PreTrainingObjective(pretraining_model)(**batch)
    assert torch.isfinite(out.loss) and out.mlm_loss is not None
    # same seed, same masks: reproducible
    assert torch.equal(make_collator(processor, seed=0)(pairs)["mlm_input_ids"], batch["mlm_input_ids"])


def test_collator_names_the_pair_missing_a_field(processor, pairs):
    del pairs[2]["pair_id"]
    with pytest.raises(KeyError, match="pair 2 .* lacks \\['pair_id'\\]"):
        make_collator(processor)(pairs)


def test_collator_with_mla_trains_each_pair_as_three_levels_sharing_its_id(processor, pairs):
    batch = make_collator(processor, seed=0, mla=True)(pairs)
    assert torch.equal(batch["pair_ids"], torch.arange(6).repeat(3))
    assert batch["pixel_values"].shape == (18, 3, 48, 32) and batch["input_ids"].shape[0] == 18
    texts = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert texts[0] == "a person wearing a red jacket and blue trousers walking away from the camera"
    # phrase level: the longest comma chunk or the other chunks, cleaned
    assert texts[6] in ("a person wearing a red jacket", "and blue trousers walking away from the camera")
    # word level: attribute phrases cut out of the caption by the chunker
    assert set(texts[12].split()) <= set(texts[0].split()) and len(texts[12]) < len(texts[0])
    torch.testing.assert_close(batch["pixel_values"][0], batch["pixel_values"][6])  # test-time views coincide
