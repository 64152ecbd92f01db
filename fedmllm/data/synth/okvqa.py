"""synth-okvqa: outside-knowledge questions about one big shape (twin of OK-VQA).

OK-VQA asks what an object is used for or what it relates to, answered from world knowledge, and is
scored by VQA accuracy over 10 annotator answers. The twin shows one big coloured shape and asks
which fruit shares its colour or which everyday object shares its shape. References: the canonical
answer 7 times plus 3 plausible alternates, so the canonical answer scores 1.0.
"""

from __future__ import annotations

import random

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, twin_loader
from fedmllm.data.synth.draw import COLORS, SHAPES, shape_scene

NAME = "synth-okvqa"
FRUIT = {
    "red": ("apple", ("cherry", "strawberry")),
    "green": ("lime", ("pear", "kiwi")),
    "blue": ("blueberry", ("plum",)),
    "yellow": ("banana", ("lemon",)),
}
THING = {
    "circle": ("ball", ("wheel", "coin")),
    "square": ("box", ("window", "tile")),
    "triangle": ("roof", ("tent", "pyramid")),
}
TEMPLATES = {
    "fruit": ("which fruit usually has this color?", "what fruit is often this color?"),
    "object": ("what everyday object has this shape?", "which common thing has this shape?"),
}
VOCAB = [t for ts in TEMPLATES.values() for t in ts] + [
    " ".join([canon, *alts]) for canon, alts in [*FRUIT.values(), *THING.values()]
]


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    qtype = rng.choice(("fruit", "object"))
    canon, alts = FRUIT[color] if qtype == "fruit" else THING[shape]
    answers = [canon] * 7 + [rng.choice(alts) for _ in range(3)]
    return Item(
        image=shape_scene(rng, [(color, shape, "centre")]),
        question=rng.choice(TEMPLATES[qtype]),
        answers=answers,
        qtype=qtype,
        label=canon,
    )


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="vqa_accuracy",
    loader=twin_loader(NAME, build),
    description="Synthetic OK-VQA: colour->fruit and shape->object knowledge, 10 references.",
    max_new_tokens=4,
    twin_of="okvqa",
))
