"""Drawing helpers shared by the twins: 64x64 canvases, shapes, text, noise.

Everything is drawn with `PIL.ImageDraw`; noise is one vectorised numpy add, with its bytes taken
from the sample's own `random.Random` so images are bit-identical across machines.
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 64

# The upstream "shape world": few, well separated colours and big, clean shapes (a probe of the
# ~1M-parameter model learnt colour at once but needed big shapes to learn shape at all).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (35, 80, 215),
    "yellow": (235, 195, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIDES: tuple[str, ...] = ("left", "right")
QUADRANTS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
# slot -> (centre x, centre y, position jitter, (min, max) size); objects stay >= 24 px.
SLOTS: dict[str, tuple[int, int, int, tuple[int, int]]] = {
    "centre": (32, 32, 4, (32, 40)),
    "left": (16, 32, 2, (24, 28)),
    "right": (48, 32, 2, (24, 28)),
    "top left": (16, 16, 2, (24, 28)),
    "top right": (48, 16, 2, (24, 28)),
    "bottom left": (16, 48, 2, (24, 28)),
    "bottom right": (48, 48, 2, (24, 28)),
}

RGB = tuple[int, int, int]


def jitter_color(rng: random.Random, rgb: RGB, k: int = 12) -> RGB:
    """``rgb`` with each channel moved by up to ``k``."""
    r, g, b = (min(255, max(0, c + rng.randint(-k, k))) for c in rgb)
    return r, g, b


def light_canvas(rng: random.Random) -> Image.Image:
    """The upstream background: plain, light, slightly tinted."""
    return Image.new("RGB", (SIZE, SIZE), tuple(rng.randint(226, 250) for _ in range(3)))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float,
               fill: tuple[int, int, int]) -> None:
    """Draw a filled circle, square or (upward) triangle of side ``size`` centred at (cx, cy)."""
    h = size / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def shape_scene(rng: random.Random, objects: list[tuple[str, str, str]]) -> Image.Image:
    """Upstream scene: ``objects`` as (colour, shape, slot), slot a key of `SLOTS`."""
    image = light_canvas(rng)
    draw = ImageDraw.Draw(image)
    for color, shape, slot in objects:
        x, y, k, (lo, hi) = SLOTS[slot]
        draw_shape(draw, shape, x + rng.randint(-k, k), y + rng.randint(-k, k), rng.randint(lo, hi),
                   jitter_color(rng, COLORS[color]))
    return image

def two_objects(rng: random.Random) -> list[tuple[str, str, str]]:
    """Two objects left and right with different colours and different shapes."""
    c1, c2 = rng.sample(list(COLORS), 2)
    s1, s2 = rng.sample(SHAPES, 2)
    return [(c1, s1, "left"), (c2, s2, "right")]


@lru_cache(maxsize=None)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font (needs Pillow >= 10.1 with FreeType)."""
    return ImageFont.load_default(size=size)  # type: ignore[return-value]


def centered_text(draw: ImageDraw.ImageDraw, text: str, cx: float, cy: float, size: int,
                  fill: tuple[int, int, int]) -> None:
    """Draw ``text`` centred on (cx, cy)."""
    draw.text((cx, cy), text, font=font(size), fill=fill, anchor="mm")


def add_noise(image: Image.Image, rng: random.Random, amplitude: int) -> Image.Image:
    """Add uniform noise in [-amplitude, amplitude] to every channel (vectorised)."""
    arr = np.asarray(image, dtype=np.int16)
    raw = np.frombuffer(rng.randbytes(arr.size), dtype=np.uint8).reshape(arr.shape)
    noise = (raw.astype(np.int16) * (2 * amplitude + 1)) // 256 - amplitude
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
