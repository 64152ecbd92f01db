"""synth-mme: paired yes/no perception questions (twin of MME).

MME asks two yes/no questions per image, one answered "yes" and one "no", scored per category by
accuracy and acc+ (both questions of an image right). The twin's categories are existence, count,
position and color, asked about one big shape (two for count). Samples ``2k`` and ``2k+1``
share one image and the pair id ``meta["pair"]``.
"""

from __future__ import annotations

import random
from typing import Optional

from PIL import Image

from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, check_request, expand, pick_other, stable_rng, to_sample
from fedmllm.data.synth.draw import COLORS, SHAPES, SIDES, shape_scene, two_objects

NAME = "synth-mme"
CATEGORIES = ("existence", "count", "position", "color")
TEMPLATES = {
    "existence": "is there a {shape} in the image?",
    "count1": "is there only one shape in the image?",
    "count2": "are there two shapes in the image?",
    "position": "is the shape on the {side}?",
    "color": "is the shape {color}?",
}
VOCAB = [text for t in TEMPLATES.values()
         for text in expand(t, shape=SHAPES, side=SIDES, color=list(COLORS))] + ["yes no"]


def build_pair(rng: random.Random) -> tuple[str, Image.Image, str, str]:
    """(category, image, yes-question, no-question) for one image.

    Only "count" shows two objects: questions that must bind a word to one of two objects stayed
    near chance for the ~1M-parameter model, single-object questions were learnt.
    """
    category = rng.choice(CATEGORIES)
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    objects = [(color, shape, "centre")]
    if category == "existence":
        q_yes = TEMPLATES["existence"].format(shape=shape)
        q_no = TEMPLATES["existence"].format(shape=pick_other(rng, SHAPES, shape))
    elif category == "count":
        if rng.random() < 0.5:
            objects, (q_yes, q_no) = two_objects(rng), (TEMPLATES["count2"], TEMPLATES["count1"])
        else:
            q_yes, q_no = TEMPLATES["count1"], TEMPLATES["count2"]
    elif category == "position":
        side = rng.choice(SIDES)
        objects = [(color, shape, side)]
        q_yes = TEMPLATES["position"].format(side=side)
        q_no = TEMPLATES["position"].format(side=pick_other(rng, SIDES, side))
    else:
        q_yes = TEMPLATES["color"].format(color=color)
        q_no = TEMPLATES["color"].format(color=pick_other(rng, list(COLORS), color))
    return category, shape_scene(rng, objects), q_yes, q_no


def make_item(split: str, seed: int, i: int) -> Item:
    """Sample ``i``: question ``i % 2`` of image pair ``i // 2`` (yes/no order drawn per pair)."""
    pair = f"{NAME}/{split}/{seed}/pair{i // 2}"
    rng = stable_rng(NAME, split, seed, "pair", i // 2)
    category, image, q_yes, q_no = build_pair(rng)
    yes_first = rng.random() < 0.5
    is_yes = (i % 2 == 0) == yes_first
    answer = "yes" if is_yes else "no"
    # Both samples of a pair redraw the image from the pair's rng: same pixels, separate objects.
    return Item(image=image, question=q_yes if is_yes else q_no, answers=[answer],
                qtype=category, label=answer, meta={"category": category, "pair": pair})


def load(split: str = "test", n: Optional[int] = None, seed: int = 0,
         source: Optional[str] = None, **options: object) -> list[Sample]:
    """Generate ``n`` samples of synth-mme (pairs of consecutive samples share an image)."""
    count = check_request(NAME, n, source, options)
    return [to_sample(NAME, split, seed, i, make_item(split, seed, i)) for i in range(count)]


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="mme",
    loader=load,
    description="Synthetic MME: existence/count/position/color yes-no pairs per image.",
    max_new_tokens=4,
    twin_of="mme",
))
