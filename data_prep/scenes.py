"""Procedural scenes of flat shapes, drawn with PIL, with the geometry kept so questions can be answered exactly.

A `Scene` is a list of `Shape` values (circle, square or triangle; a colour from `COLORS`, or one of the `SHADES` only
the mini experiment's out-of-distribution scenes use; a centre and a half-size ``r`` in pixels) drawn in list order,
so later shapes occlude earlier ones. Two layouts exist:

- flat (`flat_scene`, `separated_scene`): shapes anywhere on a plain background, for left/right, above/below,
  counting and motion questions;
- perspective (`perspective_scene`): shapes standing on a ground plane seen by a pinhole camera, so a nearer shape
  is larger, stands lower in the image and is drawn over farther ones; its world position is kept (``world_x``,
  ``depth``) for "closer to the camera" and "closer to another object" questions.

Every generator takes a `random.Random`, so a scene is a pure function of the generator's state. All sizes are
fractions of the image side, so the same code draws 56 px and 112 px scenes.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 200),
}
# Other shades of red and blue, never drawn in training data: the mini ablations' out-of-distribution scenes ask
# "Is the shape red?" about them. Kept apart from COLORS, which the SAT and CV-Bench generators sample from.
SHADES: dict[str, tuple[int, int, int]] = {
    "dark red": (140, 20, 25),
    "light red": (245, 115, 105),
    "dark blue": (25, 35, 135),
    "light blue": (110, 160, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUND = (245, 245, 240)
SKY = (232, 238, 248)
GROUND = (200, 198, 190)
HORIZON = 0.3  # perspective scenes: the horizon's height as a fraction of the image side
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Shape:
    """One shape: ``kind`` in `SHAPES`, ``color`` in `COLORS`, centre (x, y) and half-size r, all in pixels.

    ``depth`` and ``world_x`` are the camera distance and sideways position on the ground plane (perspective scenes
    only; 0 elsewhere).
    """

    kind: str
    color: str
    x: float
    y: float
    r: float
    depth: float = 0.0
    world_x: float = 0.0

    @property
    def name(self) -> str:
        """How questions refer to the shape, e.g. ``"red circle"``."""
        return f"{self.color} {self.kind}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Bounding box (left, top, right, bottom); every kind fills its box's full width and height."""
        return (self.x - self.r, self.y - self.r, self.x + self.r, self.y + self.r)

    @property
    def bottom(self) -> float:
        return self.y + self.r


@dataclass(frozen=True)
class Scene:
    """Shapes drawn in order on a ``size`` × ``size`` image; ``perspective`` adds a sky and a ground plane."""

    size: int
    shapes: tuple[Shape, ...]
    perspective: bool = False

    def find(self, name: str) -> Shape:
        """The shape called ``name`` (names are unique in scenes that questions refer to by name)."""
        matches = [s for s in self.shapes if s.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} shapes are called {name!r}")
        return matches[0]


def rgb(color: str) -> tuple[int, int, int]:
    """The RGB value of a colour of `COLORS` or `SHADES`."""
    if color in COLORS:
        return COLORS[color]
    if color in SHADES:
        return SHADES[color]
    raise ValueError(f"unknown colour {color!r}; valid colours: {', '.join([*COLORS, *SHADES])}")


def render(scene: Scene) -> Image.Image:
    """Draw ``scene`` as an RGB image."""
    size = scene.size
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if scene.perspective:
        horizon = round(HORIZON * size)
        draw.rectangle((0, 0, size - 1, horizon), fill=SKY)
        draw.rectangle((0, horizon, size - 1, size - 1), fill=GROUND)
    for shape in scene.shapes:
        fill = rgb(shape.color)
        left, top, right, bottom = (round(v) for v in shape.box)
        if shape.kind == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        elif shape.kind == "triangle":
            draw.polygon([(round(shape.x), top), (left, bottom), (right, bottom)], fill=fill)
        else:
            raise ValueError(f"unknown shape kind {shape.kind!r}; valid kinds: {', '.join(SHAPES)}")
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG bytes of ``image``; full-resolution colour (4:4:4) keeps small shapes' colours clean."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def render_jpeg(scene: Scene) -> bytes:
    return encode_jpeg(render(scene))


def boxes_apart(a: Shape, b: Shape, gap: float) -> bool:
    """True when the two bounding boxes are at least ``gap`` pixels apart on some axis (so the shapes don't touch)."""
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def _random_shape(
    rng: random.Random, size: int, color: str, radius: tuple[float, float], x_room: tuple[float, float] = (0, 0)
) -> Shape:
    r = rng.uniform(*radius) * size
    x = rng.uniform(r + x_room[0], size - 1 - r - x_room[1])
    y = rng.uniform(r, size - 1 - r)
    return Shape(kind=rng.choice(SHAPES), color=color, x=x, y=y, r=r)


def flat_scene(
    rng: random.Random,
    size: int,
    n: int,
    *,
    radius: tuple[float, float] = (0.08, 0.15),
    x_room: tuple[float, float] = (0.0, 0.0),
) -> Scene:
    """``n`` shapes (n ≤ number of colours) of distinct colours at random places; they may overlap.

    ``x_room`` keeps that many pixels free on the (left, right), so the scene can later be shifted sideways.
    """
    colors = rng.sample(list(COLORS), n)
    return Scene(size, tuple(_random_shape(rng, size, c, radius, x_room) for c in colors))


def separated_scene(
    rng: random.Random, size: int, n: int, *, radius: tuple[float, float] = (0.06, 0.11), gap: float = 4.0
) -> Scene:
    """Up to ``n`` non-touching shapes whose colours and kinds may repeat (for counting).

    Shapes that find no free place after a bounded number of tries are dropped, so the scene may hold fewer than
    ``n`` shapes; questions count what was actually placed.
    """
    shapes: list[Shape] = []
    for _ in range(n):
        color = rng.choice(list(COLORS))
        for _attempt in range(100):
            candidate = _random_shape(rng, size, color, radius)
            if all(boxes_apart(candidate, other, gap) for other in shapes):
                shapes.append(candidate)
                break
    return Scene(size, tuple(shapes))


def perspective_scene(
    rng: random.Random, size: int, n: int, *, depth_range: tuple[float, float] = (2.0, 6.0)
) -> Scene:
    """``n`` shapes of distinct colours standing on a ground plane, drawn far to near.

    A pinhole camera at height 1 looks along the ground: a shape at distance ``depth`` stands with its bottom at
    ``HORIZON·size + f_ground/depth`` and has half-size ``f·s/depth`` (s a per-shape size factor around 0.5), so
    nearer shapes are lower, larger and drawn over farther ones.
    """
    near = depth_range[0]
    f_ground = (0.96 - HORIZON) * size * near  # the nearest possible bottom lands at 96% of the image height
    f = 0.32 * size  # a shape of size factor 1 at the nearest depth has half-size 0.16·size
    shapes = []
    for color in rng.sample(list(COLORS), n):
        depth = rng.uniform(*depth_range)
        r = f * rng.uniform(0.85, 1.15) / depth
        x = rng.uniform(r, size - 1 - r)
        bottom = HORIZON * size + f_ground / depth
        shapes.append(
            Shape(
                kind=rng.choice(SHAPES),
                color=color,
                x=x,
                y=bottom - r,
                r=r,
                depth=depth,
                world_x=(x - size / 2) * depth / f,
            )
        )
    shapes.sort(key=lambda s: -s.depth)
    return Scene(size, tuple(shapes), perspective=True)


def draw_last(scene: Scene, names: list[str]) -> Scene:
    """The same scene with the named shapes moved to the end of the drawing order (so nothing occludes them)."""
    front = [s for s in scene.shapes if s.name in names]
    back = [s for s in scene.shapes if s.name not in names]
    return replace(scene, shapes=tuple(back + front))


def shifted(scene: Scene, dx: float, only: str | None = None) -> Scene:
    """The scene with every shape (or only the one called ``only``) moved ``dx`` pixels to the right."""
    return replace(
        scene, shapes=tuple(replace(s, x=s.x + dx) if only is None or s.name == only else s for s in scene.shapes)
    )


def horizontal_relation(a: Shape, b: Shape) -> str:
    """Where ``a`` is with respect to ``b``: ``"left"`` or ``"right"`` (by centre)."""
    return "left" if a.x < b.x else "right"


def vertical_relation(a: Shape, b: Shape) -> str:
    """Where ``a`` is with respect to ``b``: ``"above"`` or ``"below"`` (by centre; image y grows downwards)."""
    return "above" if a.y < b.y else "below"


def closer_to_camera(a: Shape, b: Shape) -> Shape:
    return a if a.depth < b.depth else b


def world_distance(a: Shape, b: Shape) -> float:
    """Distance between two shapes on the ground plane of a perspective scene."""
    return math.hypot(a.world_x - b.world_x, a.depth - b.depth)


def count(scene: Scene, *, color: str | None = None, kind: str | None = None) -> int:
    """How many shapes match the given colour and/or kind."""
    return sum((color is None or s.color == color) and (kind is None or s.kind == kind) for s in scene.shapes)
