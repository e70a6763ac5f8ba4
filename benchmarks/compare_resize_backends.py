"""How far transformers 5's torchvision resize (5.20.2) is from the paper's 4.49 PIL resize, in pixels.

    python benchmarks/compare_resize_backends.py

For a few image sizes (larger and smaller than the paper's bounds), the Qwen2-VL image processor's default
(torchvision) backend and its PIL backend process the same image at the paper's bounds (3,136–401,408 pixels); the
script prints the grids and the per-pixel difference in 0–255 intensity levels, first for the original image, then
for the image already fitted to the bounds by `data_prep.images.fit_image` (what `data_prep.sat` stores): there the
processor has no resizing left to do, so both backends must agree exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from data_prep.images import MAX_PIXELS, MIN_PIXELS, fit_image

SIZES = ((1024, 768), (1600, 1200), (640, 480), (448, 448), (300, 200))


def test_image(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth gradients plus noise: content with both flat areas and fine detail, like a photograph."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x / 4) % 256, (y / 3) % 256, ((x + y) / 5) % 256], -1) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def difference(image: Image.Image, torchvision_processor, pil_processor) -> tuple[list, list, np.ndarray]:
    a = torchvision_processor(images=[image], return_tensors="pt")
    b = pil_processor(images=[image], return_tensors="pt")
    scale = np.mean(torchvision_processor.image_std) * 255  # normalised values back to intensity levels
    diff = ((a["pixel_values"] - b["pixel_values"]).abs() * scale).numpy()
    return a["image_grid_thw"].tolist(), b["image_grid_thw"].tolist(), diff


def main() -> None:
    rng = np.random.default_rng(0)
    torchvision_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    pil_processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    print("size       input     grid (torchvision / PIL)      |diff| mean   p99    max  (0-255 levels)")
    for width, height in SIZES:
        image = test_image(width, height, rng)
        for label, candidate in (("original", image), ("fitted", fit_image(image, MIN_PIXELS, MAX_PIXELS))):
            grid_a, grid_b, diff = difference(candidate, torchvision_processor, pil_processor)
            print(
                f"{width}x{height:<5} {label:9} {grid_a} / {grid_b}   "
                f"{diff.mean():6.2f} {np.quantile(diff, 0.99):6.2f} {diff.max():6.1f}"
            )


if __name__ == "__main__":
    main()
