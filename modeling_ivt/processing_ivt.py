"""IVT processor: the BERT uncased WordPiece tokenizer and a 384 x 128 pedestrian image processor in one object."""

from PIL import Image
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_ivt import MAX_TEXT_POSITIONS
from .hub_utils import ProjectHubMixin
from .image_utils import MAX_IMAGE_PIXELS, check_image_pixels

# The released model normalises every channel with mean = std = 0.5 (pixels in [-1, 1]).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


TEXT_INPUT_NAMES = ("input_ids", "attention_mask")


class IVTProcessor(ProjectHubMixin, ProcessorMixin):
    r"""
    Turns captions and/or pedestrian images into model inputs. Captions are padded and always truncated to
    `max_length` tokens (100 by default; never more than the model's `MAX_TEXT_POSITIONS`, 512); images are converted to RGB,
    resized (bilinear) to the model's input size and normalised with mean = std = 0.5.

    Args:
        image_processor ([`ViTImageProcessorPil`]): resizes and normalises images.
        tokenizer ([`BertTokenizer`]): the uncased WordPiece tokenizer.
        max_length (`int`, *optional*, defaults to 100): caption length limit in tokens, [CLS] and [SEP] included.
    """

    max_text_positions = MAX_TEXT_POSITIONS
    max_image_pixels = MAX_IMAGE_PIXELS  # larger images are refused before resizing; set on an instance to change

    def __init__(self, image_processor=None, tokenizer=None, max_length=100, **kwargs):
        if not 2 <= max_length <= self.max_text_positions:
            raise ValueError(f"max_length must be between 2 and {self.max_text_positions} tokens, got {max_length}")
        self.max_length = max_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(self, text=None, images=None, return_tensors="pt", **kwargs) -> BatchFeature:
        """
        Args:
            text (`str` or `list[str]`, *optional*): captions (queries).
            images (`PIL.Image.Image`, array, or a list of them, *optional*): pedestrian images (gallery).
            return_tensors (`str`, *optional*, defaults to `"pt"`): tensor type of the result.
            kwargs: passed to the tokenizer (for example `padding="max_length"`); `max_length` is capped at `MAX_TEXT_POSITIONS`.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` for text and `pixel_values` for images.
        """
        if text is None and images is None:
            raise ValueError("IVTProcessor needs text=, images= or both")
        features = {}
        if text is not None:
            max_length = min(kwargs.pop("max_length", self.max_length), self.max_text_positions)
            kwargs.pop("truncation", None)
            encoding = self.tokenizer(
                text,
                padding=kwargs.pop("padding", True),
                truncation=True,
                max_length=max_length,
                return_token_type_ids=False,
                return_tensors=return_tensors,
                **kwargs,
            )
            features.update(encoding)
        if images is not None:
            for number, image in enumerate(images if isinstance(images, (list, tuple)) else [images]):
                if isinstance(image, Image.Image):
                    check_image_pixels(image, getattr(image, "filename", "") or f"number {number}", self.max_image_pixels)
            features["pixel_values"] = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
        return BatchFeature(features, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return [*TEXT_INPUT_NAMES, "pixel_values"]


__all__ = ["IMAGE_MEAN", "IMAGE_STD", "TEXT_INPUT_NAMES", "IVTProcessor"]
