"""Opening a user's image with a pixel limit checked from its header, before anything is decoded."""

from __future__ import annotations

import os

from PIL import Image

# Pixels (width x height) an image may have before it is refused: 8,000 x 5,000, about 120 MB once decoded to RGB.
# Pedestrian crops are far smaller; a file above this is a mistake or an attack (a tiny PNG can decode to gigabytes).
MAX_IMAGE_PIXELS = 40_000_000


class ImageTooLargeError(ValueError):
    """An image has more pixels than the configured limit (checked from its header, before decoding)."""


def check_image_pixels(image: Image.Image, source, max_pixels: int | None = None) -> Image.Image:
    """
    Refuse an image (opened, perhaps not yet decoded) larger than `max_pixels` (default `MAX_IMAGE_PIXELS`; 0: no
    limit), naming `source`: a file's header gives its size, so a huge file is refused before it takes memory.
    """
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise ImageTooLargeError(
            f"image {source} is {width} x {height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            f"(raise it with --max-image-pixels, or shrink the image)"
        )
    return image

TEXT_INPUT_NAMES = ("input_ids", "attention_mask")


def check_image_file(path: str | os.PathLike, max_pixels: int | None = None) -> None:
    """Refuse the file at `path` if its header declares more than `max_pixels`; reads the header only, and leaves
    unreadable files to whoever decodes them."""
    try:
        with Image.open(path) as image:
            check_image_pixels(image, path, max_pixels)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image {path} is too large to decode safely: {error}") from None
    except (OSError, SyntaxError):
        return


def open_image(path: str | os.PathLike, max_pixels: int | None = None, mode: str | None = "RGB") -> Image.Image:
    """
    Open and decode the image file at `path` (converted to `mode`), checking its size against `max_pixels` first;
    every failure (missing, not an image, truncated, too large) is a `ValueError` naming the file.
    """
    try:
        with Image.open(path) as image:
            check_image_pixels(image, path, max_pixels)
            if mode is None:
                image.load()
                return image
            return image.convert(mode)
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image {path} is too large to decode safely: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image {path} cannot be decoded: {error}") from None


__all__ = ["ImageTooLargeError", "MAX_IMAGE_PIXELS", "check_image_file", "check_image_pixels", "open_image"]
