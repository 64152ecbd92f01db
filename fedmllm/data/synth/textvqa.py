"""synth-textvqa: read the word or number on a sign (twin of TextVQA).

TextVQA asks about text in natural images and is scored by VQA accuracy over 10 answers. The twin
renders one of 8 short words, or one digit, big on a sign, so reading is an 8- or 10-way visual
classification. References: the canonical answer 8 times plus 2 alternates ("stop sign",
"unanswerable"), as annotators of the original produce.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, twin_loader
from fedmllm.data.synth.draw import centered_text, jitter_color, light_canvas

NAME = "synth-textvqa"
WORDS = ("stop", "open", "exit", "sale", "taxi", "park", "shop", "cafe")
DIGITS = tuple(str(d) for d in range(10))
BOARDS = ((255, 255, 255), (250, 235, 150), (190, 225, 250))
TEMPLATES = {
    "word": ("what word is written on the sign?", "what does the sign say?"),
    "number": ("what number is on the sign?", "which number is shown?"),
}
ALTERNATES = {"word": ("{a} sign", "unanswerable"), "number": ("number {a}", "unanswerable")}
VOCAB = [t for ts in TEMPLATES.values() for t in ts] + [
    text for kind, answers in (("word", WORDS), ("number", DIGITS))
    for alt in ALTERNATES[kind] for text in expand(alt, a=answers)
]


def sign_image(rng: random.Random, text: str, size: int) -> Image.Image:
    """A light sign board with ``text`` in dark letters, centred with a little jitter."""
    image = light_canvas(rng)
    draw = ImageDraw.Draw(image)
    cx, cy = 32 + rng.randint(-2, 2), 32 + rng.randint(-3, 3)
    half_w, half_h = (29, 15) if len(text) > 1 else (18, 22)
    draw.rectangle([cx - half_w, cy - half_h, cx + half_w, cy + half_h],
                   fill=jitter_color(rng, rng.choice(BOARDS), 5), outline=(60, 60, 60), width=2)
    centered_text(draw, text, cx, cy, size, fill=jitter_color(rng, (20, 20, 30), 15))
    return image


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    qtype = rng.choice(("word", "number"))
    answer = rng.choice(WORDS if qtype == "word" else DIGITS)
    size = rng.randint(18, 20) if qtype == "word" else rng.randint(32, 36)
    answers = [answer] * 8 + [rng.choice(ALTERNATES[qtype]).format(a=answer) for _ in range(2)]
    return Item(image=sign_image(rng, answer, size), question=rng.choice(TEMPLATES[qtype]),
                answers=answers, qtype=qtype, label=answer)


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="vqa_accuracy",
    loader=twin_loader(NAME, build),
    description="Synthetic TextVQA: read one of 8 words or a digit on a sign, 10 references.",
    max_new_tokens=4,
    twin_of="textvqa",
))
