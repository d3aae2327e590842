"""Pre-training batches: caption cleaning, whole-word span masking for MLM and a collator
turning `{"image", "caption", "pair_id"}` pairs (dataset_scripts.pretraining) into `IVTForPreTraining` inputs,
optionally with fine-tuning's multi-level alignment (MLA) views and texts."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from .augmentation import TrainAugmentation
from .text_levels import phrase_level, sentence_level, word_level

DELETED_PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")


@dataclass(frozen=True)
class MaskingSettings:
    """The released MLM masking: 25% of the tokens but at most 8; spans of one token or, with probability 0.2, of
    2..3 tokens, widened to whole words; masked tokens replaced by [MASK] 80%, a random token 10%, kept 10% of the
    time."""

    probability: float = 0.25
    max_masked_tokens: int = 8
    span_probability: float = 0.2
    max_span_tokens: int = 3
    mask_token_share: float = 0.8
    random_token_share: float = 0.1

    def __post_init__(self):
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"masking probability must be in (0, 1], got {self.probability}")
        if self.max_masked_tokens < 1 or self.max_span_tokens < 1:
            raise ValueError("max_masked_tokens and max_span_tokens must be at least 1")
        if not 0.0 <= self.span_probability <= 1.0:
            raise ValueError(f"span_probability must be in [0, 1], got {self.span_probability}")
        if (
            self.mask_token_share < 0
            or self.random_token_share < 0
            or self.mask_token_share + self.random_token_share > 1
        ):
            raise ValueError("mask_token_share and random_token_share must be >= 0 and sum to at most 1")


def clean_caption(caption: str, max_words: int = 50) -> str:
    """
    The released pre-training caption: lower-cased, the characters , . ' ! ? " ( ) * # : ; ~ deleted, "-" and "/"
    made spaces, "<person>" made "person", whitespace collapsed, the first `max_words` words kept.
    """
    text = DELETED_PUNCTUATION.sub("", caption.lower()).replace("-", " ").replace("/", " ")
    text = text.replace("<person>", "person")
    return " ".join(text.split()[:max_words])


def _word_bounds(tokens: list[str], start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to whole words: back to the token that begins the word, on over `##` continuations."""
    while start > 0 and tokens[start].startswith("##"):
        start -= 1
    while end < len(tokens) and tokens[end].startswith("##"):
        end += 1
    return start, end


def choose_masked_positions(tokens: list[str], settings: MaskingSettings, rng: random.Random) -> list[int]:
    """
    The released MLM masking of one tokenized caption (`[CLS]` first, no padding; a final `[SEP]`, if any, is never
    masked). Budget: round(probability x tokens, [CLS] counted), at least 1, at most `max_masked_tokens`. Token
    positions are visited in random order; each not yet masked one starts a span of one token or, with
    `span_probability`, of 2..`max_span_tokens` tokens, widened to whole words, and all of it is masked. Masked
    positions beyond the budget are dropped at random.
    """
    length = len(tokens) - (1 if len(tokens) > 1 and tokens[-1] == "[SEP]" else 0)
    if length < 2:
        return []
    budget = min(settings.max_masked_tokens, max(1, round(settings.probability * length)))
    masked: set[int] = set()
    for position in rng.sample(range(1, length), length - 1):
        if len(masked) >= budget:
            break
        if position in masked:
            continue
        span = 1
        if settings.max_span_tokens >= 2 and rng.random() < settings.span_probability:
            span = rng.randint(2, settings.max_span_tokens)
        start, end = _word_bounds(tokens, position, position + span)
        masked.update(index for index in range(max(start, 1), min(end, length)))
    if len(masked) > budget:
        masked = set(rng.sample(sorted(masked), budget))
    return sorted(masked)


def mask_captions(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer,
    settings: MaskingSettings,
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    MLM inputs for a padded batch of tokenized captions: (masked input_ids, labels) with labels = the original
    token at masked positions and -100 elsewhere. Random replacements never draw a special token.
    """
    special_ids = set(tokenizer.all_special_ids)
    replacement_ids = [index for index in range(len(tokenizer)) if index not in special_ids]
    masked_ids = input_ids.clone()
    labels = torch.full_like(input_ids, -100)
    for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist(), strict=True)):
        length = int(sum(mask))
        tokens = tokenizer.convert_ids_to_tokens(ids[:length])
        for position in choose_masked_positions(tokens, settings, rng):
            labels[row, position] = ids[position]
            draw = rng.random()
            if draw < settings.mask_token_share:
                masked_ids[row, position] = tokenizer.mask_token_id
            elif draw < settings.mask_token_share + settings.random_token_share:
                masked_ids[row, position] = rng.choice(replacement_ids)
    return masked_ids, labels


class PretrainingCollator:
    """
    Batches `{"image", "caption", "pair_id"}` pairs for `IVTForPreTraining`: captions tokenized as released, [CLS]
    and at most `max_length - 1` caption tokens with no [SEP], their masked copies for MLM, image views from `augmentation`, and the pair ids. With `mla`
    every pair becomes three pairs with its id, as in fine-tuning (training.text_levels): (view 1, sentence), (view 2, phrase),
    (view 3, word level), concatenated level by level. Every text is cleaned (lower case, no punctuation, at most
    `max_words` words) after its level is cut out. `rng` drives every draw; reseed it per batch for reproducibility.
    """

    def __init__(
        self,
        tokenizer,
        augmentation: TrainAugmentation,
        masking: MaskingSettings | None = None,
        max_words: int = 50,
        max_length: int = 50,
        mla: bool = False,
        word_max_phrases: int | None = None,
        word_mode: str = "attributes",
        seed: int = 0,
    ):
        self.tokenizer = tokenizer
        self.augmentation = augmentation
        self.masking = masking or MaskingSettings()
        self.max_words = max_words
        self.max_length = max_length
        self.mla = mla
        self.word_max_phrases = word_max_phrases
        self.word_mode = word_mode
        self.rng = random.Random(seed)

    def _levels(self, caption: str) -> list[str]:
        if not self.mla:
            return [caption]
        word = word_level(caption, [], self.rng, self.word_max_phrases, self.word_mode)
        return [sentence_level(caption), phrase_level(caption, self.rng), word]

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """[CLS] + the first `max_length - 1` tokens of each text, no [SEP], right-padded to the longest."""
        pieces = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length - 1)
        rows = [[self.tokenizer.cls_token_id] + ids for ids in pieces["input_ids"]]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = torch.tensor(row)
            attention_mask[index, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def __call__(self, pairs: list[dict]) -> dict[str, torch.Tensor]:
        for index, pair in enumerate(pairs):
            missing = {"image", "caption", "pair_id"} - set(pair)
            if missing:
                raise KeyError(f"pre-training pair {index} of the batch lacks {sorted(missing)}; got {sorted(pair)}")
        levels = [self._levels(pair["caption"]) for pair in pairs]
        num_levels = len(levels[0])
        generator = torch.Generator().manual_seed(self.rng.getrandbits(63))
        views = [[self.augmentation(pair["image"], generator) for _ in range(num_levels)] for pair in pairs]
        texts = [
            clean_caption(levels[item][level], self.max_words)
            for level in range(num_levels)
            for item in range(len(pairs))
        ]
        pixel_values = torch.stack([views[item][level] for level in range(num_levels) for item in range(len(pairs))])
        encoding = self._tokenize(texts)
        mlm_input_ids, mlm_labels = mask_captions(
            encoding["input_ids"], encoding["attention_mask"], self.tokenizer, self.masking, self.rng
        )
        pair_ids = torch.tensor([int(pair["pair_id"]) for pair in pairs], dtype=torch.long).repeat(num_levels)
        return {
            "input_ids": encoding["input_ids"],
            "attention_mask": encoding["attention_mask"],
            "pixel_values": pixel_values,
            "pair_ids": pair_ids,
            "mlm_input_ids": mlm_input_ids,
            "mlm_labels": mlm_labels,
        }
