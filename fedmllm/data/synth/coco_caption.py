"""synth-coco-caption: caption a two-object scene (twin of COCO-Caption).

COCO-Caption has 5 human captions per image, scored by CIDEr-D. The twin captions the upstream
two-object scene with 5 deterministic paraphrases built from the same attributes; the training
target (first reference) is the shortest one, listing the left object first.
"""

from __future__ import annotations

import random

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, twin_loader
from fedmllm.data.synth.draw import COLORS, SHAPES, shape_scene

NAME = "synth-coco-caption"
QUESTION = "write a short caption for this image."
PARAPHRASES = (
    "a {a} and a {b}",
    "a {a} on the left and a {b} on the right",
    "a {b} to the right of a {a}",
    "there is a {a} next to a {b}",
    "a picture of a {a} and a {b}",
)
VOCAB = [QUESTION] + [text for p in PARAPHRASES
                      for text in expand(p, a=list(COLORS), b=SHAPES)]


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    (c1, s1), (c2, s2) = [(rng.choice(list(COLORS)), rng.choice(SHAPES)) for _ in range(2)]
    objects = [(c1, s1, "left"), (c2, s2, "right")]
    captions = [p.format(a=f"{c1} {s1}", b=f"{c2} {s2}") for p in PARAPHRASES]
    return Item(image=shape_scene(rng, objects), question=QUESTION, answers=captions,
                qtype="caption", label=s1)


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="cider_d",
    loader=twin_loader(NAME, build),
    description="Synthetic COCO-Caption: 5 templated captions of two coloured shapes.",
    max_new_tokens=16,
    twin_of="coco-caption",
))
