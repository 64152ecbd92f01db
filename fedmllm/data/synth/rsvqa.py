"""synth-rsvqa: land-cover questions on a tiled satellite view (twin of RSVQA-LR).

RSVQA-LR asks presence, comparison, count and rural/urban questions about Sentinel-2 tiles, scored
by exact match. The twin is a 4x4 grid of 16 px land-cover tiles (water, forest, farmland,
residential) with noise and texture, aligned with the model's 16 px patches. Presence questions
name any cover; count (water tiles, 0-4) and comparison (water versus forest, counts at least 3
apart) name fixed covers: with a cover named per question, the ~1M-parameter model stayed at chance
on both after 300 tuning steps.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, twin_loader, yes_no

NAME = "synth-rsvqa"
COVERS = ("water", "forest", "farmland", "residential")
PALETTE = np.array([(40, 85, 165), (35, 110, 45), (185, 160, 95), (135, 135, 140)], dtype=np.int16)
COUNTS = ("0", "1", "2", "3", "4")
TEMPLATES = {
    "presence": "is there any {cover} area?",
    "count": "how many water areas are there?",
    "comp": "are there more water areas than forest areas?",
    "rural_urban": "is this a rural or an urban area?",
}
VOCAB = [text for t in TEMPLATES.values() for text in expand(t, cover=COVERS)] + [
    "yes no rural urban " + " ".join(COUNTS)]


def _textures() -> np.ndarray:
    """16x16 brightness offsets per cover: ripples, canopy dots, furrows, building blocks."""
    yy, xx = np.mgrid[0:16, 0:16]
    water = np.where((yy + xx // 4) % 6 == 0, 18, 0)
    forest = np.where((yy * 7 + xx * 3) % 5 == 0, -25, 0)
    farmland = np.where(yy % 4 < 2, 20, -20)
    residential = np.where((yy % 6 < 4) & (xx % 6 < 4), 45, -35)
    return np.stack([water, forest, farmland, residential]).astype(np.int16)


TEXTURES = _textures()


def render(rng: random.Random, grid: list[int]) -> Image.Image:
    """Paint the 4x4 cover ``grid`` (row-major cover indices) as a noisy 64x64 image."""
    cells = np.array(grid).reshape(4, 4)
    base = np.repeat(np.repeat(PALETTE[cells], 16, axis=0), 16, axis=1)
    texture = TEXTURES[cells].transpose(0, 2, 1, 3).reshape(64, 64)
    raw = np.frombuffer(rng.randbytes(64 * 64 * 3), dtype=np.uint8).reshape(64, 64, 3)
    noise = raw.astype(np.int16) // 8 - 16
    return Image.fromarray(np.clip(base + texture[..., None] + noise, 0, 255).astype(np.uint8))


def fill(rng: random.Random, fixed: dict[int, int]) -> list[int]:
    """A shuffled grid with exactly ``fixed[c]`` tiles of cover c; other tiles from other covers."""
    others = [c for c in range(len(COVERS)) if c not in fixed]
    grid = [c for c, k in fixed.items() for _ in range(k)]
    grid += [rng.choice(others) for _ in range(16 - len(grid))]
    rng.shuffle(grid)
    return grid


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    qtype = rng.choice(("presence", "count", "comp", "rural_urban"))
    water, forest, residential = (COVERS.index(c) for c in ("water", "forest", "residential"))
    cover = rng.randrange(len(COVERS))
    if qtype == "presence":
        truth = rng.random() < 0.5
        grid, answer = fill(rng, {cover: rng.randint(1, 4) if truth else 0}), yes_no(truth)
    elif qtype == "count":
        answer = rng.choice(COUNTS)
        grid = fill(rng, {water: int(answer)})
    elif qtype == "comp":
        # Counts differ by >= 3 tiles, so the answer is a coarse blue-versus-green judgement.
        more = rng.random() < 0.5
        low = rng.randint(0, 4)
        high = low + rng.randint(3, 5)
        counts = {water: high, forest: low} if more else {water: low, forest: high}
        grid, answer = fill(rng, counts), yes_no(more)
    else:
        urban = rng.random() < 0.5
        grid = fill(rng, {residential: rng.randint(9, 14) if urban else rng.randint(0, 2)})
        answer = "urban" if urban else "rural"
    return Item(image=render(rng, grid), question=TEMPLATES[qtype].format(cover=COVERS[cover]),
                answers=[answer], qtype=qtype, label=answer)

TASK = register_task(Task(
    name=NAME,
    role="downstream",
    metric="exact_match",
    loader=twin_loader(NAME, build),
    description="Synthetic RSVQA: presence, count, comparison and rural/urban on land-cover tiles.",
    max_new_tokens=4,
    twin_of="rsvqa",
))
