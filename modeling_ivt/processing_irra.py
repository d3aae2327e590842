"""IRRA processor: CLIP's byte-level BPE tokenizer with IRRA's caption conventions, and IRRA's image preprocessing."""

import html

import ftfy
import regex

from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .hub_utils import ProjectHubMixin


def clean_caption(text: str) -> str:
    """CLIP's text cleaning: ftfy's fixes, HTML entities unescaped twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class IRRAProcessor(ProjectHubMixin, ProcessorMixin):
    r"""
    Turns captions and/or pedestrian images into [`IRRAModel`] inputs exactly as IRRA does. A caption is cleaned
    ([`clean_caption`]), byte-level BPE encoded, wrapped in start-of-text / end-of-text, truncated to `max_length`
    tokens keeping end-of-text last, and padded with id 0 (IRRA's padding; the causal text tower never lets it reach
    the end-of-text token). Images go through [`IRRAImageProcessor`].

    Args:
        image_processor ([`IRRAImageProcessor`]): resizes and normalises images.
        tokenizer ([`CLIPTokenizer`]): CLIP's BPE vocabulary with `<|mask|>` at id 49405.
        max_length (`int`, *optional*, defaults to 77): caption length in tokens (the text tower's positions).
    """

    padding_id = 0

    def __init__(self, image_processor=None, tokenizer=None, max_length=77, **kwargs):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens (start and end of text), got {max_length}")
        self.max_length = max_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, text=None, images=None, return_tensors="pt", **kwargs) -> BatchFeature:
        """
        Args:
            text (`str` or `list[str]`, *optional*): captions (queries).
            images (`PIL.Image.Image`, array, or a list of them, *optional*): pedestrian images (gallery).
            return_tensors (`str`, *optional*, defaults to `"pt"`): tensor type of the result.
            kwargs: `padding` (default `"max_length"`, IRRA's fixed length; `True` pads to the longest caption) and
                `max_length` (at most the processor's `max_length`).

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` for text and `pixel_values` for images.
        """
        if text is None and images is None:
            raise ValueError("IRRAProcessor needs text=, images= or both")
        features = {}
        if text is not None:
            captions = [clean_caption(text)] if isinstance(text, str) else [clean_caption(t) for t in text]
            encoding = self.tokenizer(
                captions,
                padding=kwargs.pop("padding", "max_length"),
                truncation=True,
                max_length=min(kwargs.pop("max_length", self.max_length), self.max_length),
            )
            features["input_ids"] = [
                [token if keep else self.padding_id for token, keep in zip(ids, mask)]
                for ids, mask in zip(encoding["input_ids"], encoding["attention_mask"])
            ]
            features["attention_mask"] = encoding["attention_mask"]
        if kwargs:
            raise TypeError(f"IRRAProcessor got unexpected arguments: {', '.join(sorted(kwargs))}")
        if images is not None:
            features["pixel_values"] = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
        return BatchFeature(features, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["IRRAProcessor", "clean_caption"]
