"""The pixel limit where images enter the model: the processor refuses a huge image before resizing it."""

import pytest
from PIL import Image

from modeling_ivt import create_processor
from modeling_ivt.image_utils import ImageTooLargeError
from tests.reliability.crafted import png_claiming


def test_the_processor_refuses_a_huge_image_before_decoding_it(tmp_path):
    processor = create_processor(image_size=(64, 32))
    with Image.open(png_claiming(tmp_path / "huge.png", 8000, 6000)) as huge:  # opened, not decoded
        with pytest.raises(ImageTooLargeError, match=r"huge\.png is 8000 x 6000"):
            processor(images=[Image.new("RGB", (32, 64)), huge])
    processor.max_image_pixels = 100
    with pytest.raises(ImageTooLargeError, match=r"image number 0 is 32 x 64 = 2,048 pixels, above the limit of 100"):
        processor(images=Image.new("RGB", (32, 64)))
    processor.max_image_pixels = 0
    assert processor(images=Image.new("RGB", (32, 64)))["pixel_values"].shape == (1, 3, 64, 32)
