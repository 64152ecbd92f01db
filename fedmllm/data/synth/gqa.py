"""synth-gqa: compositional questions on a two-object scene (twin of GQA).

GQA asks about attributes, relations and verification in scene graphs, scored by exact match. The
twin shows two objects (left, right; different colours and shapes) and asks for an object's colour,
the shape on a side, the side of an object, or verifies an attribute (yes/no).
"""

from __future__ import annotations

import random

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, pick_other, twin_loader, yes_no
from fedmllm.data.synth.draw import COLORS, SHAPES, SIDES, shape_scene, two_objects

NAME = "synth-gqa"
TEMPLATES = {
    "color": "what color is the {shape}?",
    "shape": "what shape is on the {side}?",
    "position": "which side is the {color} {shape} on?",
    "verify": "is the {shape} {color}?",
}
VOCAB = [text for t in TEMPLATES.values()
         for text in expand(t, color=list(COLORS), shape=SHAPES, side=SIDES)] + ["yes no"]


def build(rng: random.Random) -> Item:
    objects = two_objects(rng)
    color, shape, side = rng.choice(objects)
    qtype = rng.choice(("color", "shape", "position", "verify"))
    answer = {"color": color, "shape": shape, "position": side}.get(qtype, "")
    if qtype == "verify":
        truth = rng.random() < 0.5
        answer = yes_no(truth)
        if not truth:  # ask about a colour this shape does not have
            color = pick_other(rng, list(COLORS), color)
    question = TEMPLATES[qtype].format(color=color, shape=shape, side=side)
    return Item(image=shape_scene(rng, objects), question=question, answers=[answer],
                qtype=qtype, label=answer)


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="exact_match",
    loader=twin_loader(NAME, build),
    description="Synthetic GQA: colour, shape, position and verification on two-object scenes.",
    max_new_tokens=4,
    twin_of="gqa",
))
