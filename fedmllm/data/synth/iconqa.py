"""synth-iconqa: counting and naming small icons (twin of IconQA).

IconQA asks abstract-diagram questions: fill-in-the-blank (often counting, a number answer) and
choose-the-text (the answer is the choice's text, scored by exact match). The twin scatters 1-5
small dark icons (star, heart, diamond, cross) on a pastel background, one per 16 px cell, and asks
how many there are, or which icon is shown from 3 text choices.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, twin_loader
from fedmllm.data.synth.draw import SIZE, jitter_color

NAME = "synth-iconqa"
ICONS = {"star": "stars", "heart": "hearts", "diamond": "diamonds", "cross": "crosses"}
COUNTS = ("1", "2", "3", "4", "5")
BACKGROUNDS = ((160, 225, 185), (195, 170, 240), (250, 190, 145))
INKS = ((30, 40, 110), (120, 25, 45), (20, 90, 70))
TEMPLATES = {
    "count": "how many {plural} are there?",
    "choose_txt": "which icon is shown in the picture?",
}
INSTRUCTION = "Choices: {choices}. Answer with the word."
VOCAB = expand(TEMPLATES["count"], plural=list(ICONS.values())) + [
    TEMPLATES["choose_txt"], INSTRUCTION.format(choices=", ".join(ICONS)), " ".join(COUNTS)]


def draw_icon(draw: ImageDraw.ImageDraw, icon: str, cx: float, cy: float, r: float, fill) -> None:
    """A star, heart, diamond or cross of radius ``r`` centred at (cx, cy)."""
    if icon == "star":
        radii = [r if k % 2 == 0 else r * 0.45 for k in range(10)]
        draw.polygon([(cx + rk * math.sin(k * math.pi / 5), cy - rk * math.cos(k * math.pi / 5))
                      for k, rk in enumerate(radii)], fill=fill)
    elif icon == "heart":
        h = r / 2
        draw.ellipse([cx - r, cy - r, cx, cy], fill=fill)
        draw.ellipse([cx, cy - r, cx + r, cy], fill=fill)
        draw.polygon([(cx - r, cy - h), (cx + r, cy - h), (cx, cy + r)], fill=fill)
    elif icon == "diamond":
        w = r * 0.7
        draw.polygon([(cx, cy - r), (cx + w, cy), (cx, cy + r), (cx - w, cy)], fill=fill)
    else:
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


def icon_image(rng: random.Random, icon: str, count: int) -> Image.Image:
    """``count`` icons in distinct cells of a framed 4x4 pastel worksheet."""
    image = Image.new("RGB", (SIZE, SIZE), jitter_color(rng, rng.choice(BACKGROUNDS), 8))
    draw = ImageDraw.Draw(image)
    frame = jitter_color(rng, (255, 255, 255), 10)
    for k in range(0, SIZE + 1, 16):  # a worksheet-like frame, one cell per 16 px patch
        draw.line([(k, 0), (k, SIZE)], fill=frame, width=2)
        draw.line([(0, k), (SIZE, k)], fill=frame, width=2)
    ink = jitter_color(rng, rng.choice(INKS), 10)
    for cell in rng.sample(range(16), count):
        cx = 16 * (cell % 4) + 8 + rng.randint(-1, 1)
        cy = 16 * (cell // 4) + 8 + rng.randint(-1, 1)
        draw_icon(draw, icon, cx, cy, 6.5, ink)
    return image


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    icon = rng.choice(list(ICONS))
    if rng.random() < 0.5:
        count = rng.choice(COUNTS)
        return Item(image=icon_image(rng, icon, int(count)),
                    question=TEMPLATES["count"].format(plural=ICONS[icon]),
                    answers=[count], qtype="count", label=count)
    choices = [icon] + rng.sample([i for i in ICONS if i != icon], 2)
    rng.shuffle(choices)
    return Item(image=icon_image(rng, icon, rng.randint(1, 4)), question=TEMPLATES["choose_txt"],
                answers=[icon], choices=choices, qtype="choose_txt", label=icon)


def prompt(sample: Sample) -> str:
    """IconQA answers with the choice's text, not its letter."""
    if sample.choices:
        return f"{sample.question} {INSTRUCTION.format(choices=', '.join(sample.choices))}"
    return sample.question


TASK = register_task(Task(
    name=NAME,
    role="downstream",
    metric="exact_match",
    loader=twin_loader(NAME, build),
    description="Synthetic IconQA: count 1-5 small icons, or name the icon from 3 text choices.",
    prompt=prompt,
    max_new_tokens=4,
    twin_of="iconqa",
))
