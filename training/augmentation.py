"""Train-time image augmentation of the released recipe (ivt_spec.md section 6), with torch and Pillow only.

bicubic resize -> zero pad -> random crop -> horizontal flip -> to tensor -> normalise (the processor's mean/std) -> random erasing
with per-pixel random values. Every random draw comes from the `torch.Generator` passed in, so a view is a pure
function of (image, generator state): that is what makes resumed runs repeat the same views.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from modeling_ivt.processing_ivt import IMAGE_MEAN, IMAGE_STD

MEAN = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGE_STD).view(3, 1, 1)


def to_normalised_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W), normalised like the processor (ToTensor, then the model's mean/std)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return (torch.from_numpy(array).permute(2, 0, 1) - MEAN) / STD


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def random_erasing(
    pixels: torch.Tensor,
    generator: torch.Generator,
    probability: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    attempts: int = 10,
) -> torch.Tensor:
    """
    With `probability`, replace one rectangle (area a uniform `scale` fraction of the image, log-uniform aspect
    `ratio`) with standard-normal noise, per pixel and channel; up to `attempts` draws to find a rectangle that fits.
    """
    if _uniform(generator) >= probability:
        return pixels
    channels, height, width = pixels.shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * _uniform(generator, *scale)
        aspect = math.exp(_uniform(generator, *log_ratio))
        box_height = int(round(math.sqrt(target_area * aspect)))
        box_width = int(round(math.sqrt(target_area / aspect)))
        if box_height < height and box_width < width:
            top = _randint(generator, 0, height - box_height)
            left = _randint(generator, 0, width - box_width)
            pixels = pixels.clone()
            noise = torch.randn((channels, box_height, box_width), generator=generator)
            pixels[:, top : top + box_height, left : left + box_width] = noise
            return pixels
    return pixels


class TrainAugmentation:
    """
    One augmented view of a pedestrian image at `image_size` (height, width). Settings as released: pad 10, flip 0.5,
    random erasing 0.5; `enabled=False` gives the test-time preprocessing (bilinear resize, normalise) instead.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        pad: int = 10,
        flip_prob: float = 0.5,
        erasing_prob: float = 0.5,
        enabled: bool = True,
    ):
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        for name, value in (("flip_prob", flip_prob), ("erasing_prob", erasing_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.height, self.width = image_size
        self.pad = pad
        self.flip_prob = flip_prob
        self.erasing_prob = erasing_prob
        self.enabled = enabled

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        image = image.convert("RGB")
        if not self.enabled:
            return to_normalised_tensor(image.resize((self.width, self.height), Image.Resampling.BILINEAR))
        image = image.resize((self.width, self.height), Image.Resampling.BICUBIC)
        if self.pad:
            padded = Image.new("RGB", (self.width + 2 * self.pad, self.height + 2 * self.pad), (0, 0, 0))
            padded.paste(image, (self.pad, self.pad))
            top = _randint(generator, 0, 2 * self.pad)
            left = _randint(generator, 0, 2 * self.pad)
            image = padded.crop((left, top, left + self.width, top + self.height))
        if _uniform(generator) < self.flip_prob:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = to_normalised_tensor(image)
        return random_erasing(pixels, generator, probability=self.erasing_prob)
