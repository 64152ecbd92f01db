"""synth-gqa: attribute, position and verification questions on a shape scene (twin of GQA).

GQA asks about objects' attributes and positions ("Is the cup on the left or the right?") and
verifies attributes, scored by exact match. The twin shows one big shape in one quadrant and asks
its colour, its shape, whether it is left or right / at the top or the bottom, or verifies its
colour (yes/no). A probe of the ~1M-parameter model found two-object questions that must bind a
word to one of the objects ("what color is the circle?") stayed near chance after 3000 steps, while
questions about a single object were learnt; so the twin keeps one object per image.
"""

from __future__ import annotations

import random

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, pick_other, twin_loader, yes_no
from fedmllm.data.synth.draw import COLORS, QUADRANTS, SHAPES, shape_scene

NAME = "synth-gqa"
TEMPLATES = {
    "color": "what color is the shape?",
    "shape": "what shape is in the image?",
    "side": "is the shape on the left or the right?",
    "height": "is the shape at the top or the bottom?",
    "verify": "is the shape {color}?",
}
VOCAB = [text for t in TEMPLATES.values() for text in expand(t, color=list(COLORS))] + [
    " ".join(SHAPES), "yes no"]


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    color, shape, quadrant = rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(QUADRANTS)
    qtype = rng.choice(("color", "shape", "position", "verify"))
    template, asked = qtype, color
    if qtype == "color":
        answer = color
    elif qtype == "shape":
        answer = shape
    elif qtype == "position":
        template = rng.choice(("side", "height"))
        answer = quadrant.split()[1 if template == "side" else 0]
    else:
        truth = rng.random() < 0.5
        answer = yes_no(truth)
        if not truth:  # ask about a colour the shape does not have
            asked = pick_other(rng, list(COLORS), color)
    return Item(image=shape_scene(rng, [(color, shape, quadrant)]),
                question=TEMPLATES[template].format(color=asked), answers=[answer],
                qtype=qtype, label=answer)


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="exact_match",
    loader=twin_loader(NAME, build),
    description="Synthetic GQA: colour, shape, position and colour verification of one shape.",
    max_new_tokens=4,
    twin_of="gqa",
))
