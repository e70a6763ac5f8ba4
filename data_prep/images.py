"""Images stored at the size the model will see them: one resolution for training, vLLM and evaluation.

Qwen2-VL's processor resizes every image with ``smart_resize``: both sides rounded to a multiple of ``factor``
(28 = patch 14 × merge 2) and the area brought within ``[min_pixels, max_pixels]``. Two processors with different
bounds (the trainer at the paper's 401,408 pixels, vLLM or an evaluation at the checkpoint's default of up to
12,845,056) therefore see a large image at different resolutions. An image that is already a fixed point of
``smart_resize`` at the training bounds (sides multiples of ``factor``, area within the bounds) is left as it is
by every processor whose bounds contain the training bounds: the same ``image_grid_thw`` everywhere, and no
resampling at all. `fit_image` and `fit_encoded` make images such fixed points; images that already are one are
returned untouched (the same object, the same bytes).

Transparency: `to_rgb` is the one conversion to RGB, and it is what the processor the trainer uses does
(transformers 5.20 ``convert_to_rgb``, both the torchvision and the PIL backend of Qwen2-VL's image processor):
PIL's ``convert("RGB")``, which drops the alpha channel (the colour stored under a transparent pixel shows; no
compositing) and ignores a palette's transparency. `fit_image` converts before it resizes, in the processor's order,
so an image with transparency is stored as the pixels the processor would have computed from the original; the
evaluation (`recipes.evaluation.data.open_image`) converts the same way. Not followed, on purpose: the paper's
transformers 4.49 and ``qwen_vl_utils.to_rgb`` composite RGBA on white (a test pins the pinned processor's rule).

Why images are fitted with PIL rather than left to the processor: for an image within the bounds whose sides are not
multiples of 28 (most photographs and renders, e.g. 512x384 → 504x392) every processor computes the same size, but
not the same pixels. The PIL processor (``Qwen2VLImageProcessorPil``) resizes exactly as `fit_image` does (identical
pixel values); transformers 5's default torchvision processor resamples differently (up to 1 intensity level of 255
on a 512x384 scene, up to ~6 on photographs; ``benchmarks/compare_resize_backends.py``). From a fitted image both
compute the paper's values (`tests/test_sat_prep.py`).

Where: by default when the records are read (`FitImages`, applied by `recipes.shared.data.fit_images`); `data_prep.sat`
stores the source's bytes. Fitting at prep (`fit_encoded`, ``--fit-images-at-prep``) costs a full decode, a resize and
a PNG encode per image, ~8 ms of CPU for a 512x384 JPEG, where the check alone costs a fraction of a millisecond;
fitting at load adds only the resize (and a JPEG instead of a PNG decode) to the read the trainer does anyway, a few ms
per image against seconds per training step. The pixels are the same either way (a test compares them byte for byte,
and the processors' outputs). One difference: `datasets` applies a JPEG's EXIF orientation when it decodes, so an image
with an EXIF rotation reaches the model upright (the former prep path stored it unrotated); its prompt length is
unchanged (`fitted_size` treats both sides alike). The prep path's encoding, for ``--fit-images-at-prep``:

PNG with zlib's run-length strategy (`PNG_STRATEGY`), chosen by measurement (CPU ms per 504x392 image, bytes
as a multiple of the 512x384 source JPEG; Pillow 13, loaded 2-core machine):

================  ======================  ====================================
encoding          synthetic scenes        photographs (3, JPEG quality 90)
================  ======================  ====================================
PNG, default      5.7 ms, x1.20           48-68 ms, x4.5-5.3
PNG, level 1      3.5 ms, x1.55           17-21 ms, x4.7-5.7
PNG, Z_RLE        3.4 ms, x1.16           15-16 ms, x4.5-5.6
WebP lossless m0  6.4 ms, x3.66           7-13 ms, x3.9-4.5
WebP lossless m1  13.8 ms, x0.96          30-35 ms, x3.3-3.9
================  ======================  ====================================

Z_RLE is never larger than the default on the scenes and at most ~8% larger on photographs, for 1.7-4x less time;
WebP m0 is faster and ~20% smaller on photographs but 3x larger on flat scenes, and drops the L/LA modes. Decoding
a PNG is exact (a test compares the stored pixels with `fit_image`'s).

The paper's bounds are defined here once (`MIN_PIXELS`, `MAX_PIXELS`, `IMAGE_FACTOR`); a test checks them against
``recipes/configs/paper/grpo_base.yaml``.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageFile

MAX_ASPECT_RATIO = 200  # Qwen2-VL's processor (and smart_resize) refuse images more elongated than this
MIN_PIXELS = 3136  # the paper's min_pixels (= 56 * 56, also Qwen2-VL's default)
MAX_PIXELS = 401408  # the paper's max_pixels (= 512 * 28 * 28: at most 512 image tokens)
IMAGE_FACTOR = 28  # Qwen2-VL: 14-pixel patches merged 2 x 2, so sides are multiples of 28
# Qwen2-VL's processor resamples with bicubic interpolation; resizing with the same filter keeps our stored
# pixels as close as possible to what the trainer would have computed from the original.
RESAMPLE = Image.Resampling.BICUBIC
# Modes a resized image keeps (the processor's conversion to RGB commutes with resizing them); any other (alpha,
# palette, CMYK, 16-bit, ...) is converted to RGB first, as the processor does before it resizes.
KEPT_MODES = ("RGB", "L")
# How fitted images are stored: PNG (lossless, keeps every kept mode) with zlib's run-length strategy, the fastest
# choice that is not larger than zlib's default on both kinds of content measured (see the module docstring).
PNG_STRATEGY = zlib.Z_RLE
PNG_LEVEL = 6


def check_bounds(min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR) -> None:
    """Raise `ValueError` with a readable message unless the bounds make sense for `smart_resize`.

    Example:
        >>> check_bounds(MIN_PIXELS, MAX_PIXELS, IMAGE_FACTOR)
        >>> check_bounds(10_000, 5_000)
        Traceback (most recent call last):
        ...
        ValueError: min_pixels (10000) must not exceed max_pixels (5000)
    """
    if factor < 1:
        raise ValueError(f"the image factor must be at least 1; got {factor}")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be at least 1; got {min_pixels}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    if max_pixels < factor * factor:
        raise ValueError(f"max_pixels ({max_pixels}) must be at least factor² = {factor * factor} (one patch)")


def fitted_size(
    width: int, height: int, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR
) -> tuple[int, int]:
    """The ``(width, height)`` a Qwen2-VL processor at these bounds resizes an image of this size to.

    Raises `ValueError` when one side is more than 200 times the other (Qwen2-VL's processor refuses those too).

    Example:
        >>> fitted_size(112, 112, MIN_PIXELS, MAX_PIXELS)  # already a fixed point
        (112, 112)
        >>> fitted_size(1500, 1000, MIN_PIXELS, MAX_PIXELS)  # too large: shrunk within max_pixels
        (756, 504)
        >>> fitted_size(40, 30, MIN_PIXELS, MAX_PIXELS)  # too small: enlarged to min_pixels
        (84, 56)
    """
    check_bounds(min_pixels, max_pixels, factor)
    if width < 1 or height < 1:
        raise ValueError(f"an image of {width}x{height} pixels has no area")
    if is_fixed_point(width, height, min_pixels, max_pixels, factor):
        return width, height
    # The arithmetic of qwen_vl_utils.smart_resize (a test compares the two on thousands of sizes), written here
    # because importing qwen_vl_utils imports torch: ~700 MB and seconds of start-up in every converting process.
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(f"an image of {width}x{height} pixels has an aspect ratio beyond {MAX_ASPECT_RATIO}:1")
    new_height = max(factor, round(height / factor) * factor)
    new_width = max(factor, round(width / factor) * factor)
    if new_height * new_width > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_height = math.floor(height / beta / factor) * factor
        new_width = math.floor(width / beta / factor) * factor
    elif new_height * new_width < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_height = math.ceil(height * beta / factor) * factor
        new_width = math.ceil(width * beta / factor) * factor
    return new_width, new_height


def is_fixed_point(width: int, height: int, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR) -> bool:
    """True when `smart_resize` leaves this size as it is: both sides multiples of ``factor``, the area within the
    bounds, the aspect ratio accepted. (A test checks this against `qwen_vl_utils.smart_resize` itself.)

    Example:
        >>> is_fixed_point(112, 112, MIN_PIXELS, MAX_PIXELS), is_fixed_point(100, 112, MIN_PIXELS, MAX_PIXELS)
        (True, False)
    """
    return (
        width % factor == 0
        and height % factor == 0
        and min_pixels <= width * height <= max_pixels
        and max(width, height) <= MAX_ASPECT_RATIO * min(width, height)
    )


def image_tokens(width: int, height: int, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR) -> int:
    """How many image tokens Qwen2-VL's prompt holds for an image of this size, at these bounds.

    Example:
        >>> image_tokens(112, 112, MIN_PIXELS, MAX_PIXELS), image_tokens(4000, 4000, MIN_PIXELS, MAX_PIXELS)
        (16, 484)
    """
    new_width, new_height = fitted_size(width, height, min_pixels, max_pixels, factor)
    return (new_width // factor) * (new_height // factor)


def fit_image(image: Image.Image, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR) -> Image.Image:
    """``image`` itself when it is already within the bounds (its `smart_resize` size is its size), else a copy
    resized to that size with the processor's bicubic filter.

    A resized image keeps an RGB or L mode; any other mode (RGBA, LA, palette with or without transparency, CMYK,
    16-bit, ...) is converted with `to_rgb` first, as the processor converts before resizing: the processor then
    gives the fitted image the pixels it would have given the original. Raises `ValueError` for an aspect ratio
    beyond 200:1.

    Example:
        >>> small = Image.new("RGB", (112, 112), "red")
        >>> fit_image(small, MIN_PIXELS, MAX_PIXELS) is small
        True
        >>> big = fit_image(Image.new("RGB", (1500, 1000), "red"), MIN_PIXELS, MAX_PIXELS)
        >>> big.size, big.mode
        ((756, 504), 'RGB')
    """
    size = fitted_size(image.width, image.height, min_pixels, max_pixels, factor)
    if size == image.size:
        return image
    if image.mode not in KEPT_MODES:
        image = to_rgb(image)
    return image.resize(size, RESAMPLE)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB as Qwen2-VL's image processor (transformers 5.20) converts it: alpha dropped, not composited.

    Example:
        >>> pixel = Image.new("RGBA", (1, 1), (200, 10, 10, 0))  # fully transparent red
        >>> to_rgb(pixel).getpixel((0, 0))
        (200, 10, 10)
    """
    return image if image.mode == "RGB" else image.convert("RGB")


def fit_encoded(data: bytes, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR) -> tuple[bytes, bool]:
    """``(data, False)`` when the encoded image is already within the bounds (only its header is read), else
    ``(PNG bytes of the resized image, True)``: re-encoded losslessly, so the only change is the resize.

    Raises PIL's errors (`PIL.UnidentifiedImageError`, `OSError`, ...) for data that is not a decodable image, and
    `ValueError` for an aspect ratio beyond 200:1.

    Example:
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (1500, 1000), "red").save(buffer, format="JPEG")
        >>> data, resized = fit_encoded(buffer.getvalue(), MIN_PIXELS, MAX_PIXELS)
        >>> resized, Image.open(io.BytesIO(data)).format, Image.open(io.BytesIO(data)).size
        (True, 'PNG', (756, 504))
        >>> fit_encoded(data, MIN_PIXELS, MAX_PIXELS) == (data, False)
        True
    """
    with strict_loading(), Image.open(io.BytesIO(data)) as image:
        if fitted_size(image.width, image.height, min_pixels, max_pixels, factor) == image.size:
            return data, False
        image.load()
        return encode_png(fit_image(image, min_pixels, max_pixels, factor)), True


class FitImages:
    """A `datasets` transform (``Dataset.with_transform``) that fits every image of a batch with `fit_image`, as it
    is read: records whose images are stored as in the source give the trainer, vLLM and the processor exactly the
    pixels `fit_encoded` would have stored (a test compares them byte for byte), without the cost of fitting and
    re-encoding every image at prep. Images already within the bounds are passed on untouched.

    Example:
        >>> fit = FitImages(MIN_PIXELS, MAX_PIXELS)
        >>> batch = fit({"images": [[Image.new("RGB", (512, 384))]], "solution": ["a"]})
        >>> batch["images"][0][0].size, batch["solution"]
        ((504, 392), ['a'])
    """

    def __init__(self, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR, column: str = "images"):
        check_bounds(min_pixels, max_pixels, factor)
        self.min_pixels, self.max_pixels, self.factor, self.column = min_pixels, max_pixels, factor, column

    def __call__(self, batch: dict) -> dict:
        if self.column in batch:
            batch[self.column] = [
                None if images is None else [self.fit(image) for image in images] for images in batch[self.column]
            ]
        return batch

    def fit(self, image: Image.Image | None) -> Image.Image | None:
        return None if image is None else fit_image(image, self.min_pixels, self.max_pixels, self.factor)


def encode_png(image: Image.Image) -> bytes:
    """``image`` encoded losslessly as PNG, with zlib's run-length strategy (`PNG_STRATEGY`, see the docstring)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_LEVEL, compress_type=PNG_STRATEGY)
    return buffer.getvalue()


def load_checked(image: Image.Image) -> None:
    """Decode an opened image completely, raising PIL's error if its data is broken. JPEGs are decoded at reduced
    scale, which still reads every byte of the compressed data (so truncation is caught) in a fraction of the time;
    the image must not be used for its pixels afterwards.

    Example:
        >>> buffer = io.BytesIO()
        >>> Image.new("RGB", (64, 64), "red").save(buffer, format="JPEG")
        >>> with strict_loading(), Image.open(io.BytesIO(buffer.getvalue()[:-10])) as broken:
        ...     load_checked(broken)
        Traceback (most recent call last):
        ...
        OSError: image file is truncated (3 bytes not processed)
    """
    if image.format == "JPEG":
        image.draft("RGB", (1, 1))
    image.load()


@contextmanager
def strict_loading() -> Iterator[None]:
    """Make PIL refuse truncated images even if another library relaxed it for the process."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
