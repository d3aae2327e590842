"""Pre-training batches: caption cleaning, whole-word span masking for MLM (ivt_spec.md section 4) and a collator
turning `{"image", "caption", "pair_id"}` pairs (dataset_scripts.pretraining) into `IVTForPreTraining` inputs."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
from PIL import Image

PUNCTUATION = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class MaskingSettings:
    """The released MLM masking: whole words, 25% of the tokens but at most 8, spans of 2..3 words with
    probability 0.2, masked tokens replaced by [MASK] 80%, a random token 10%, kept 10% of the time."""

    probability: float = 0.25
    max_masked_tokens: int = 8
    span_probability: float = 0.2
    max_span_words: int = 3
    mask_token_share: float = 0.8
    random_token_share: float = 0.1

    def __post_init__(self):
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"masking probability must be in (0, 1], got {self.probability}")
        if self.max_masked_tokens < 1 or self.max_span_words < 1:
            raise ValueError("max_masked_tokens and max_span_words must be at least 1")
        if not 0.0 <= self.span_probability <= 1.0:
            raise ValueError(f"span_probability must be in [0, 1], got {self.span_probability}")
        if (
            self.mask_token_share < 0
            or self.random_token_share < 0
            or self.mask_token_share + self.random_token_share > 1
        ):
            raise ValueError("mask_token_share and random_token_share must be >= 0 and sum to at most 1")


def clean_caption(caption: str, max_words: int = 50) -> str:
    """Lower-case, replace punctuation by spaces, collapse whitespace, keep the first `max_words` words."""
    return " ".join(PUNCTUATION.sub(" ", caption.lower()).split()[:max_words])


def _words(tokens: list[str], first: int, last: int) -> list[list[int]]:
    """Token positions of each whole word in tokens[first:last]: a word is a token plus its `##` continuations."""
    words: list[list[int]] = []
    for position in range(first, last):
        if tokens[position].startswith("##") and words:
            words[-1].append(position)
        else:
            words.append([position])
    return words


def choose_masked_positions(tokens: list[str], settings: MaskingSettings, rng: random.Random) -> list[int]:
    """
    Positions to mask in one tokenized caption `[CLS] ... [SEP]` (no padding). Budget: round(probability x
    caption tokens), at least 1, at most `max_masked_tokens`. Words are visited in random order; each starts a
    span of one word, or with `span_probability` of 2..`max_span_words` consecutive words, and all its tokens are
    masked. A last span overshooting the budget is cut down to a random subset of the budget's size.
    """
    words = _words(tokens, 1, len(tokens) - 1)
    num_tokens = sum(len(word) for word in words)
    if num_tokens == 0:
        return []
    budget = min(settings.max_masked_tokens, max(1, round(settings.probability * num_tokens)))
    masked: set[int] = set()
    for start in rng.sample(range(len(words)), len(words)):
        if len(masked) >= budget:
            break
        if words[start][0] in masked:
            continue
        span = 1
        if settings.max_span_words >= 2 and rng.random() < settings.span_probability:
            span = rng.randint(2, settings.max_span_words)
        for word in words[start : start + span]:
            masked.update(word)
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
    Batches `{"image", "caption", "pair_id"}` pairs for `IVTForPreTraining`: cleaned captions tokenized by the IVT
    processor, their masked copies for MLM, images resized and normalised by the processor (flipped horizontally
    with `flip_probability`), and the pair ids. `seed` makes the masking reproducible; give each process its own.
    """

    def __init__(
        self,
        processor,
        masking: MaskingSettings | None = None,
        max_words: int = 50,
        flip_probability: float = 0.5,
        seed: int = 0,
    ):
        self.processor = processor
        self.masking = masking or MaskingSettings()
        self.max_words = max_words
        self.flip_probability = flip_probability
        self.rng = random.Random(seed)

    def __call__(self, pairs: list[dict]) -> dict[str, torch.Tensor]:
        for index, pair in enumerate(pairs):
            missing = {"image", "caption", "pair_id"} - set(pair)
            if missing:
                raise KeyError(f"pre-training pair {index} of the batch lacks {sorted(missing)}; got {sorted(pair)}")
        captions = [clean_caption(pair["caption"], self.max_words) for pair in pairs]
        images = [pair["image"].convert("RGB") for pair in pairs]
        images = [
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.rng.random() < self.flip_probability else image
            for image in images
        ]
        batch = self.processor(text=captions, images=images)
        mlm_input_ids, mlm_labels = mask_captions(
            batch["input_ids"], batch["attention_mask"], self.processor.tokenizer, self.masking, self.rng
        )
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "pixel_values": batch["pixel_values"],
            "pair_ids": torch.tensor([int(pair["pair_id"]) for pair in pairs], dtype=torch.long),
            "mlm_input_ids": mlm_input_ids,
            "mlm_labels": mlm_labels,
        }
