"""Train-time image augmentation of the released IVT and IRRA recipes, with torch and Pillow only.

IVT: bicubic resize -> zero pad -> random crop -> horizontal flip -> to tensor -> normalise (the processor's mean/std) -> random erasing
with per-pixel random values. IRRA: see `IRRATrainAugmentation`. Every random draw comes from the `torch.Generator` passed in, so a view is a pure
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
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    attempts: int = 10,
    fill: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """
    With `probability`, replace one rectangle (area a uniform `scale` fraction of the image, log-uniform aspect
    `ratio`) with standard-normal noise, per pixel and channel, or with one `fill` value per channel; up to `attempts`
    draws to find a rectangle that fits. The default bounds are timm's `RandomErasing`, which the released code uses:
    area 0.02 to 1/3 of the image, aspect 0.3 to 1/0.3.
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
            if fill is None:
                patch = torch.randn((channels, box_height, box_width), generator=generator)
            else:
                patch = torch.tensor(fill, dtype=pixels.dtype).view(channels, 1, 1)
            pixels[:, top : top + box_height, left : left + box_width] = patch
            return pixels
    return pixels


def check_settings(pad: int, flip_prob: float, erasing_prob: float) -> None:
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    for name, value in (("flip_prob", flip_prob), ("erasing_prob", erasing_prob)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


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
        check_settings(pad, flip_prob, erasing_prob)
        self.height, self.width = image_size
        self.pad = pad
        self.flip_prob = flip_prob
        self.erasing_prob = erasing_prob
        self.enabled = enabled

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        return self.augment(self.resize(image), generator)

    def resize(self, image: Image.Image) -> torch.Tensor:
        """The draw-free first step, as a uint8 tensor (3, H, W): bicubic resize (bilinear at test time). A dataset
        may keep its result and augment it again for every view."""
        resample = Image.Resampling.BICUBIC if self.enabled else Image.Resampling.BILINEAR
        resized = image.convert("RGB").resize((self.width, self.height), resample)
        return torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1)

    def augment(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The random steps on a `resize` result, drawn from `generator` in the released order: zero pad and random
        crop, flip, normalise, random erasing."""
        if self.enabled and self.pad:
            top = _randint(generator, 0, 2 * self.pad)
            left = _randint(generator, 0, 2 * self.pad)
            padded = torch.nn.functional.pad(pixels, (self.pad,) * 4)
            pixels = padded[:, top : top + self.height, left : left + self.width]
        if self.enabled and _uniform(generator) < self.flip_prob:
            pixels = pixels.flip(-1)
        pixels = (pixels.float() / 255.0 - MEAN) / STD
        if not self.enabled:
            return pixels
        return random_erasing(pixels, generator, probability=self.erasing_prob)


class IRRATrainAugmentation:
    """
    IRRA's training view at `image_size` (height, width): bilinear resize, horizontal flip, zero padding, random crop
    back to the size, to tensor, normalisation with the processor's `mean` / `std`, then random erasing (area 2-40 %,
    aspect 0.3-3.3) filled with the `mean` values per channel, as IRRA's code does. `enabled=False` gives the
    test-time preprocessing (resize, normalise). Every draw comes from the generator passed in.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        pad: int = 10,
        flip_prob: float = 0.5,
        erasing_prob: float = 0.5,
        erasing_scale: tuple[float, float] = (0.02, 0.4),
        enabled: bool = True,
    ):
        check_settings(pad, flip_prob, erasing_prob)
        self.height, self.width = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.pad = pad
        self.flip_prob = flip_prob
        self.erasing_prob = erasing_prob
        self.erasing_scale = erasing_scale
        self.enabled = enabled

    def _normalise(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.float32) / 255.0
        return (torch.from_numpy(array).permute(2, 0, 1) - self.mean) / self.std

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        image = image.convert("RGB").resize((self.width, self.height), Image.Resampling.BILINEAR)
        if not self.enabled:
            return self._normalise(image)
        if _uniform(generator) < self.flip_prob:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.pad:
            padded = Image.new("RGB", (self.width + 2 * self.pad, self.height + 2 * self.pad), (0, 0, 0))
            padded.paste(image, (self.pad, self.pad))
            top = _randint(generator, 0, 2 * self.pad)
            left = _randint(generator, 0, 2 * self.pad)
            image = padded.crop((left, top, left + self.width, top + self.height))
        pixels = self._normalise(image)
        return random_erasing(
            pixels,
            generator,
            probability=self.erasing_prob,
            scale=self.erasing_scale,
            ratio=(0.3, 3.3),
            fill=tuple(self.mean.flatten().tolist()),
        )
