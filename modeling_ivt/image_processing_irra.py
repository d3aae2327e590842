"""IRRA's test-time image preprocessing: RGB, PIL bilinear resize to the model's input size, CLIP's mean and std."""

import numpy as np
import PIL.Image

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from .configuration_irra import DEFAULT_IMAGE_SIZE


class IRRAImageProcessor(PilBackend):
    r"""
    Resizes pedestrian images to `size` (height, width) with PIL's bilinear filter, scales them to [0, 1] and
    normalises them with OpenAI CLIP's mean and std, as IRRA evaluates. PIL images are converted to RGB by PIL itself
    (a transparent image keeps its colours, it is not composited on white), as IRRA's image loader does.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": DEFAULT_IMAGE_SIZE[0], "width": DEFAULT_IMAGE_SIZE[1]}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def convert_to_rgb(self, image, input_data_format=None) -> np.ndarray:
        if isinstance(image, PIL.Image.Image):
            return np.array(image.convert("RGB"))
        return super().convert_to_rgb(image, input_data_format=input_data_format)


__all__ = ["IRRAImageProcessor"]
