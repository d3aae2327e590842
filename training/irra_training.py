"""Fine-tuning an IRRA-family model: the training-time model with its training-only heads, and its data.

`IRRAForRetrievalTraining` holds the `IRRAModel` that gets saved (`.model`) next to the heads that only training
uses: the identity classifier of the ID loss and the IRR head (`training.irr`). Saving the best model saves `.model`
alone, so inference checkpoints stay clean. Its parameter names (`classifier.*`, `irr.cross_attn.*`,
`irr.mlm_head.*`) are what the recipe's learning-rate rules match (`training.irra_recipe`).
"""

from __future__ import annotations

import random

import datasets
import torch
from torch import nn

from .irr import IRRHead, mask_caption_tokens
from .loss import RetrievalTrainingOutput, identity_classifier


class IRRAForRetrievalTraining(nn.Module):
    """
    The training-time forward of an IRRA-family model, in one `forward` so that DistributedDataParallel sees a single
    call. Captions are encoded without a padding mask, as IRRA does (padding follows end-of-text, so the pooled
    embedding is the same; the IRR head reads every token).
    """

    def __init__(self, model, num_train_ids: int | None = None, irr: bool = True):
        super().__init__()
        self.model = model
        embed_dim = model.config.projection_dim
        self.classifier = identity_classifier(embed_dim, num_train_ids) if num_train_ids else None
        self.irr = IRRHead(embed_dim, model.config.text_config.vocab_size) if irr else None

    def load_training_heads(self, tensors: dict[str, torch.Tensor]) -> list[str]:
        """
        Load the training-only tensors of an IRRA checkpoint (IRRA's names: `classifier.*`, `cross_attn.*`, ...)
        into the heads this run trains; returns the loaded names. A classifier over a different number of identities
        (another training set) stays new, and so does a head this run's losses leave out.
        """
        own = self.state_dict()
        loaded = {}
        for key, value in tensors.items():
            name = key if key.startswith("classifier.") else f"irr.{key}"
            if name in own and own[name].shape == value.shape:
                loaded[name] = value.to(own[name].dtype)
        self.load_state_dict(loaded, strict=False)
        return sorted(loaded)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        masked_input_ids: torch.Tensor | None = None,
        irr_labels: torch.Tensor | None = None,
    ) -> RetrievalTrainingOutput:
        image = self.model.get_image_features(pixel_values)
        text = self.model.get_text_features(input_ids)
        output = RetrievalTrainingOutput(image_embeds=image.pooler_output, text_embeds=text.pooler_output)
        if self.classifier is not None:
            output.image_logits = self.classifier(image.pooler_output)
            output.text_logits = self.classifier(text.pooler_output)
        if self.irr is not None:
            if masked_input_ids is None or irr_labels is None:
                raise ValueError("the IRR head needs masked_input_ids and irr_labels (IRRATrainingDataset gives them)")
            masked_tokens = self.model.get_text_features(masked_input_ids).last_hidden_state
            output.irr_logits, output.irr_labels = self.irr(masked_tokens, image.last_hidden_state, irr_labels)
        return output


class IRRATrainingDataset(torch.utils.data.Dataset):
    """
    Training items of an IRRA-family model, indexed by `(pair_index, item_seed)` as the samplers yield them: one
    augmented view, the tokenized caption (fixed length, as the processor pads), and with `irr` its masked copy and
    labels. The seed drives every random draw of the item, so an item is the same in any DataLoader worker and after
    a resume.
    """

    def __init__(
        self,
        pairs: datasets.Dataset,
        augmentation,
        processor,
        mask_token_id: int | None = None,
    ):
        self.pairs = pairs
        self.augmentation = augmentation
        self.processor = processor
        self.mask_token_id = mask_token_id
        self.person_ids = pairs.select_columns(["person_id"]).with_format(None)[:]["person_id"]  # no image decoded

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, item_seed = key
        example = self.pairs[int(index)]
        generator = torch.Generator().manual_seed(item_seed)
        input_ids = self.processor(text=example["caption"])["input_ids"][0]
        item = {
            "pixel_values": self.augmentation(example["image"], generator),
            "input_ids": input_ids,
            "person_id": example["person_id"],
        }
        if self.mask_token_id is not None:
            mask_generator = torch.Generator().manual_seed(random.Random(item_seed).getrandbits(63))
            item["masked_input_ids"], item["irr_labels"] = mask_caption_tokens(
                input_ids, self.mask_token_id, mask_generator
            )
        return item


def collate_irra_items(items: list[dict]) -> dict[str, torch.Tensor]:
    batch = {name: torch.stack([item[name] for item in items]) for name in items[0] if name != "person_id"}
    batch["person_ids"] = torch.tensor([item["person_id"] for item in items], dtype=torch.long)
    return batch
