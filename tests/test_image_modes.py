"""Images with transparency (RGBA, LA, a palette with a transparent colour) and other modes: data prep's fitting and
the evaluation give the real Qwen2-VL image processor the pixels it would compute from the original image.

The processor (transformers 5.20, torchvision and PIL backends alike) converts with PIL's ``convert("RGB")``: alpha
dropped, no compositing. The PIL backend resizes with PIL's bicubic filter, as `data_prep.images.fit_image` does, so
with it the comparison is exact even for images that need resizing.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from data_prep.images import fit_encoded, fit_image, to_rgb
from recipes.evaluation.data import open_image

MIN_PIXELS, MAX_PIXELS = 3136, 12544  # the tiny checkpoint's bounds


def transparent_image(mode: str, size: tuple[int, int]) -> Image.Image:
    """Random colours, the top third fully transparent (with colours stored under it), the next third half."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    third = size[1] // 3
    pixels[:third, :, 3] = 0
    pixels[third : 2 * third, :, 3] = 128
    rgba = Image.fromarray(pixels, "RGBA")
    if mode == "P":  # a palette image whose first colour is transparent
        image = rgba.convert("RGB").quantize(32)
        image.info["transparency"] = 0
        return image
    return rgba.convert(mode)


def encoded(image: Image.Image) -> tuple[bytes, Image.Image]:
    """The image's encoded bytes (PNG; JPEG for CMYK, which PNG cannot hold) and the image they decode to."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if image.mode == "CMYK" else "PNG")
    return buffer.getvalue(), Image.open(io.BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def image_processors(tiny_base_dir):
    from transformers import AutoImageProcessor

    return {
        backend: AutoImageProcessor.from_pretrained(tiny_base_dir, backend=backend)
        for backend in ("pil", "torchvision")
    }


def pixel_values(processor, image: Image.Image) -> np.ndarray:
    return processor(images=[image], return_tensors="np")["pixel_values"]


MODES = ["RGBA", "LA", "P", "L", "CMYK"]


@pytest.mark.parametrize("mode", MODES)
def test_the_processor_converts_by_dropping_alpha_as_to_rgb_does(mode, image_processors):
    image = transparent_image(mode, (112, 84))  # a fixed point of the bounds: no resizing anywhere
    for processor in image_processors.values():
        assert np.array_equal(pixel_values(processor, image), pixel_values(processor, to_rgb(image)))
    if mode == "RGBA":  # not composited on white (transformers 4.49 and qwen_vl_utils do that)
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.getchannel("A"))
        assert not np.array_equal(
            pixel_values(image_processors["pil"], image), pixel_values(image_processors["pil"], white)
        )


@pytest.mark.parametrize("mode", MODES)
def test_a_fitted_image_gives_the_processor_the_pixels_of_the_original(mode, image_processors):
    original = transparent_image(mode, (224, 168))  # 37,632 pixels: over the bound, resized
    fitted = fit_image(original, MIN_PIXELS, MAX_PIXELS)
    assert fitted.size != original.size
    processor = image_processors["pil"]
    assert np.array_equal(pixel_values(processor, fitted), pixel_values(processor, original))
    # The stored bytes too (data prep writes a lossless PNG of the fitted image).
    source, decoded = encoded(original)
    data, resized = fit_encoded(source, MIN_PIXELS, MAX_PIXELS)
    assert resized
    assert np.array_equal(pixel_values(processor, Image.open(io.BytesIO(data))), pixel_values(processor, decoded))


@pytest.mark.parametrize("size", [(112, 84), (224, 168)])
@pytest.mark.parametrize("mode", MODES)
def test_the_evaluation_sees_what_the_processor_makes_of_the_original(mode, size, image_processors):
    source, original = encoded(transparent_image(mode, size))
    evaluated = fit_image(open_image({"bytes": source, "path": None}), MIN_PIXELS, MAX_PIXELS)  # given to generate
    assert evaluated.mode == "RGB"
    processor = image_processors["pil"]
    assert np.array_equal(pixel_values(processor, evaluated), pixel_values(processor, original))
