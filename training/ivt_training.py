"""Fine-tuning IVT: the training-time model with its training-only head, and its data.

`IVTForRetrievalTraining` holds the `IVTModel` that gets saved (`.model`) next to the identity classifier of the ID
loss, which only training uses. `IVTTrainingDataset` gives, with MLA (`--mla`, the default), three (view, text level)
pairs per caption (training.text_levels), else one (view, sentence) pair; `IVTTrainingCollator` batches them level by
level.
"""

from __future__ import annotations

import random

import datasets
import torch

from .augmentation import TrainAugmentation
from .loss import RetrievalTrainingOutput, identity_classifier
from .text_levels import cut_caption, phrase_level, sentence_level, word_level

# Training images are resized once and kept (uint8) when they fit in this much memory per DataLoader process.
RESIZED_CACHE_BYTES = 1 << 30


class IVTForRetrievalTraining(torch.nn.Module):
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


class IVTTrainingDataset(torch.utils.data.Dataset):
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
        # The text columns once, as lists, without decoding a single image (an image is decoded only where its
        # resized copy is not kept).
        columns = pairs.select_columns(["person_id", "caption", "attributes"]).with_format(None)[:]
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


class IVTTrainingCollator:
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
