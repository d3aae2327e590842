"""Multi-level alignment (MLA, ivt_spec.md section 3): three texts of different granularity per training caption,
each paired with its own augmented view of the image, and the training dataset that produces them.

Word level: the generated benchmark stores the phrases of each image's visible attributes (`attributes` column), and
those are used as they are. Where a record has no attribute phrases (the real CUHK-PEDES release; the authors'
annotation file was never published) the phrases come from `attribute_phrases_from_caption`, a rule-based chunker:
the caption is cut at punctuation and at the connectives that introduce a garment or an item in pedestrian
descriptions ("and", "with", "wearing", "carrying", ...), leading articles and pronouns are stripped, and chunks of at
least two words are kept ("a woman wearing a red shirt and blue jeans" -> "red shirt", "blue jeans").
"""

from __future__ import annotations

import random
import re

import datasets
import torch

from .augmentation import TrainAugmentation
from .loss import RetrievalTrainingOutput, identity_classifier

MIN_CHUNK_CHARS = 5
# Training images are resized once and kept (uint8) when they fit in this much memory per DataLoader process.
RESIZED_CACHE_BYTES = 1 << 30
CONNECTIVES = (
    r"\band\b|\bwith\b|\bwearing\b|\bwears\b|\bcarrying\b|\bcarries\b|\bholding\b|\bholds\b|\bhas\b|\bhave\b|"
    r"\bis\b|\bwho\b|\bwhile\b|\bover\b|\bon (?:her|his|the) (?:back|shoulder|head|feet)\b"
)
LEADING_WORDS = {"a", "an", "the", "he", "she", "his", "her", "this", "that", "they", "their", "also", "in", "of"}


def sentence_level(caption: str) -> str:
    """The whole caption, lower-cased."""
    return caption.strip().lower()


def _sentences(caption: str) -> list[str]:
    """The lower-cased caption cut at "." after stripping its end periods and brackets, as the released code does."""
    return caption.lower().strip(".").strip("[").strip("]").split(".")


def phrase_candidates(caption: str) -> list[str]:
    """
    The released phrase rule: per sentence, the longest comma chunk and the other chunks re-joined with "," (commas
    at the ends of the re-joined text removed); a candidate is kept when it is longer than 5 characters as it stands,
    and only then stripped of surrounding spaces (so " a hat" is kept as "a hat", and "grey trousers, " becomes
    "grey trousers,").
    """
    candidates = []
    for sentence in _sentences(caption):
        chunks = sentence.split(",")
        longest = max(range(len(chunks)), key=lambda index: len(chunks[index]))
        rest = (",".join(chunks[:longest]) + "," + ",".join(chunks[longest + 1 :])).strip(",")
        candidates.extend(text for text in (chunks[longest], rest) if len(text) > MIN_CHUNK_CHARS)
    return [text.strip(" ") for text in candidates]


def chunk_candidates(caption: str) -> list[str]:
    """
    The released word level of ICFG-PEDES and RSTPReid: every comma chunk of every sentence that is longer than 5
    characters as it stands, then stripped of surrounding spaces.
    """
    chunks = [chunk for sentence in _sentences(caption) for chunk in sentence.split(",")]
    return [chunk.strip(" ") for chunk in chunks if len(chunk) > MIN_CHUNK_CHARS]


def caption_word_starts(caption: str) -> list[int]:
    """
    Where each word of a caption starts, words counted as the released loaders count them: the caption split at
    spaces, a piece holding ".", "," or "?" split again at the first of them it holds (empty parts dropped); an empty
    piece between two spaces counts as a word.
    """
    starts, offset = [], 0
    for piece in caption.split(" "):
        separator = next((mark for mark in ".,?" if mark in piece), None)
        if separator is None:
            starts.append(offset)
        else:
            inner = offset
            for part in piece.split(separator):
                if part:
                    starts.append(inner)
                inner += len(part) + 1
        offset += len(piece) + 1
    return starts


def cut_caption(caption: str, max_words: int) -> str:
    """The caption up to (not including) its word number `max_words + 1` (the released ICFG-PEDES training cut)."""
    starts = caption_word_starts(caption)
    return caption if len(starts) <= max_words else caption[: starts[max_words]].rstrip(" ")


def attribute_phrases_from_caption(caption: str) -> list[str]:
    """Short attribute phrases cut out of a caption by the rule-based chunker described in the module docstring."""
    phrases = []
    for piece in re.split(r"[.,;:!?]|" + CONNECTIVES, caption.lower()):
        words = piece.split()
        while words and words[0] in LEADING_WORDS:
            words = words[1:]
        phrase = " ".join(words)
        if len(words) >= 2 and len(phrase) > MIN_CHUNK_CHARS:
            phrases.append(phrase)
    return phrases


def phrase_level(caption: str, rng: random.Random) -> str:
    """One phrase candidate chosen uniformly; the sentence level when the caption has none."""
    candidates = phrase_candidates(caption)
    return rng.choice(candidates) if candidates else sentence_level(caption)


def word_level(
    caption: str, attributes: list[str], rng: random.Random, max_phrases: int | None, mode: str
) -> str:
    """
    mode "attributes": k attribute phrases (the record's, else the chunker's) joined with ", ", k uniform in 1..the
    number of phrases as released (capped at `max_phrases` when given); mode "chunk": one comma chunk. Falls back to
    the phrase level when nothing qualifies (where the released code would fail).
    """
    if mode == "chunk":
        candidates = chunk_candidates(caption)
        return rng.choice(candidates) if candidates else phrase_level(caption, rng)
    phrases = [phrase.lower() for phrase in attributes] or attribute_phrases_from_caption(caption)
    if not phrases:
        return phrase_level(caption, rng)
    count = rng.randint(1, len(phrases) if max_phrases is None else min(max_phrases, len(phrases)))
    return ", ".join(rng.sample(phrases, count))


class MLATrainingDataset(torch.utils.data.Dataset):
    """
    Training items for IVT, each caption cut at `max_caption_words` words when given. Indexed by `(pair_index,
    item_seed)` as the identity sampler yields them: the seed drives every random choice of the item (views, phrase
    picks), so an item is reproducible wherever it is built (any DataLoader worker, before or after a resume). With
    `mla` an item is three (view, text) pairs: (view 1, sentence), (view 2, phrase), (view 3, word); without, one
    (view, sentence) pair.
    """

    def __init__(
        self,
        pairs: datasets.Dataset,
        augmentation: TrainAugmentation,
        mla: bool = True,
        word_max_phrases: int | None = None,
        word_mode: str = "attributes",
        max_caption_words: int | None = None,
    ):
        self.pairs = pairs
        self.max_caption_words = max_caption_words
        self.augmentation = augmentation
        self.mla = mla
        self.word_max_phrases = word_max_phrases
        self.word_mode = word_mode
        # The text columns once, as lists; an image is decoded only where its resized copy is not kept.
        columns = pairs.with_format(None)[:]
        self.person_ids = columns["person_id"]
        self.captions = columns["caption"]
        self.attributes = columns["attributes"]
        self.image_rows = columns.get("row", list(range(len(pairs))))
        height, width = augmentation.height, augmentation.width
        self.resized_images = {} if len(set(self.image_rows)) * 3 * height * width <= RESIZED_CACHE_BYTES else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, item_seed = int(key[0]), key[1]
        rng = random.Random(item_seed)
        generator = torch.Generator().manual_seed(item_seed)
        caption = self.captions[index]
        if self.max_caption_words is not None:
            caption = cut_caption(caption, self.max_caption_words)
        texts = [sentence_level(caption)]
        if self.mla:
            texts.append(phrase_level(caption, rng))
            texts.append(word_level(caption, self.attributes[index], rng, self.word_max_phrases, self.word_mode))
        resized = self.resized_image(index)
        views = torch.stack([self.augmentation.augment(resized, generator) for _ in texts])
        return {"pixel_values": views, "texts": texts, "person_id": self.person_ids[index]}

    def resized_image(self, index: int) -> torch.Tensor:
        """The pair's image after the augmentation's draw-free resize, kept where the cache allows."""
        if self.resized_images is None:
            return self.augmentation.resize(self.pairs[index]["image"])
        row = self.image_rows[index]
        if row not in self.resized_images:
            self.resized_images[row] = self.augmentation.resize(self.pairs[index]["image"])
        return self.resized_images[row]


class MLACollator:
    """
    Concatenates the items' pairs level by level into one batch of (levels x items) pairs. Each level's texts are
    tokenized and padded on their own: word- and phrase-level texts are much shorter than sentences, and padding them
    to the sentence length would spend most of the text compute on padding.
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[dict]) -> dict:
        num_levels = len(items[0]["texts"])
        text_levels = []
        for level in range(num_levels):
            encoding = self.tokenizer(
                [item["texts"][level] for item in items],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_token_type_ids=False,
                return_tensors="pt",
            )
            text_levels.append({"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]})
        pixel_values = torch.cat(
            [torch.stack([item["pixel_values"][level] for item in items]) for level in range(num_levels)]
        )
        person_ids = torch.tensor([item["person_id"] for item in items], dtype=torch.long).repeat(num_levels)
        return {"pixel_values": pixel_values, "text_levels": text_levels, "person_ids": person_ids}


def batch_to_device(batch, device):
    """The batch with every tensor in it (nested in dicts and lists, as MLA's text levels are) on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {name: batch_to_device(value, device) for name, value in batch.items()}
    if isinstance(batch, list):
        return [batch_to_device(value, device) for value in batch]
    return batch


class IVTForMLATraining(torch.nn.Module):
    """
    The training-time forward of IVT: [CLS] features of every view and of every text level (encoded level by level),
    in one `forward` so that DistributedDataParallel sees a single call. `model` is the IVTModel that gets saved;
    with `num_train_ids`, an identity classifier for the ID loss is trained next to it (and not saved). Token dropping
    draws from `token_drop_generator`, through IVTModel's private hooks (its public feature methods take no RNG).
    """

    def __init__(self, model, num_train_ids: int | None = None):
        super().__init__()
        self.model = model
        self.classifier = identity_classifier(model.config.hidden_size, num_train_ids) if num_train_ids else None

    def forward(
        self, pixel_values: torch.Tensor, text_levels: list[dict], token_drop_generator: torch.Generator | None = None
    ) -> RetrievalTrainingOutput:
        image_features = self.model._image_features(pixel_values, token_drop_generator)
        text_features = [
            self.model._text_features(level["input_ids"], level["attention_mask"], token_drop_generator).pooler_output
            for level in text_levels
        ]
        output = RetrievalTrainingOutput(image_embeds=image_features.pooler_output, text_embeds=torch.cat(text_features))
        if self.classifier is not None:
            output.image_logits = self.classifier(output.image_embeds)
            output.text_logits = self.classifier(output.text_embeds)
        return output
