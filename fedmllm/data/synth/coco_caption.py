"""synth-coco-caption: caption a two-object scene (twin of COCO-Caption).

COCO-Caption has 5 human captions per image, scored by CIDEr-D. The twin draws two coloured shapes,
left and right, and five captions from a weighted grammar (`fedmllm.data.synth.captions`): sentence
frames that name both objects in either order, with or without their positions, or only their
colours; synonyms for the shapes ("circle", "dot", "ball"), optional size and colour words, an
optional background. The training target (the first reference) is one such draw, as a COCO model
trains on one human caption at a time.
"""

from __future__ import annotations

import random

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, twin_loader
from fedmllm.data.synth.captions import Choice, compose, pick, words
from fedmllm.data.synth.draw import COLORS, SHAPES, shape_scene

NAME = "synth-coco-caption"
QUESTION = "write a short caption for this image."
N_REFS = 5

NOUNS: dict[str, Choice] = {
    "circle": (("circle", 0.4), ("dot", 0.15), ("ball", 0.15), ("disc", 0.1), ("round shape", 0.1),
               ("circle shape", 0.1)),
    "square": (("square", 0.4), ("box", 0.15), ("block", 0.15), ("tile", 0.1), ("rectangle", 0.1),
               ("square shape", 0.1)),
    "triangle": (("triangle", 0.45), ("pyramid", 0.15), ("wedge", 0.1), ("cone", 0.1),
                 ("triangle shape", 0.1), ("three sided shape", 0.1)),
}
SIZE: Choice = (("", 0.6), ("big ", 0.1), ("large ", 0.1), ("small ", 0.1), ("little ", 0.1))
TINT: Choice = (("{c}", 0.7), ("bright {c}", 0.1), ("{c} colored", 0.08), ("dark {c}", 0.06),
                ("light {c}", 0.06))
FRAMES: Choice = (
    ("a {A} and a {B}", 0.08),
    ("a {A} next to a {B}", 0.08),
    ("a {A} beside a {B}", 0.05),
    ("a {A} near a {B}", 0.04),
    ("a {A} with a {B}", 0.04),
    ("a {A} sitting next to a {B}", 0.04),
    ("a {A} to the left of a {B}", 0.04),
    ("a {A} on the left and a {B} on the right", 0.06),
    ("a {B} to the right of a {A}", 0.04),
    ("a {B} and a {A}", 0.06),
    ("a {B} next to a {A}", 0.04),
    ("there is a {A} next to a {B}", 0.04),
    ("a picture of a {A} and a {B}", 0.04),
    ("an image of a {A} and a {B}", 0.03),
    ("a drawing of a {A} and a {B}", 0.03),
    ("two shapes , a {A} and a {B}", 0.04),
    ("two objects : a {A} and a {B}", 0.03),
    ("a {A} and a {B} side by side", 0.04),
    ("the {A} is to the left of the {B}", 0.03),
    ("a {c1} shape and a {c2} shape", 0.04),
    ("two simple shapes , one {c1} and one {c2}", 0.03),
    ("a {n1} and a {n2}", 0.05),
    ("a {n1} next to a {n2} in {c1} and {c2}", 0.03),
    ("a {A} and another shape", 0.03),
    ("{c1} and {c2} shapes side by side", 0.03),
)
BACKGROUND: Choice = (("", 0.75), (" on a white background", 0.1), (" on a plain background", 0.08),
                      (" against a light backdrop", 0.07))
VOCAB = [QUESTION] + words(FRAMES, SIZE, TINT, BACKGROUND, *NOUNS.values()) + list(COLORS)


def noun_phrase(rng: random.Random, color: str, shape: str) -> str:
    """One annotator's words for one object, e.g. "red circle", "big bright red ball"."""
    return f"{pick(rng, SIZE)}{pick(rng, TINT).format(c=color)} {pick(rng, NOUNS[shape])}"


def caption(rng: random.Random, c1: str, s1: str, c2: str, s2: str) -> str:
    """One human-like caption of the left (c1, s1) and right (c2, s2) objects."""
    return compose(rng, pick(rng, FRAMES) + pick(rng, BACKGROUND),
                   {"A": noun_phrase(rng, c1, s1), "B": noun_phrase(rng, c2, s2), "c1": c1, "c2": c2,
                    "n1": NOUNS[s1], "n2": NOUNS[s2]})


def plain_caption(objects: list[list[str]]) -> str:
    """The grammar's most common wording of ``objects`` ([[c1, s1], [c2, s2]], as in a sample's
    ``meta["objects"]``): "a red circle and a green square"."""
    (c1, s1), (c2, s2) = objects
    return f"a {c1} {s1} and a {c2} {s2}"


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: the two objects, the image, then five captions."""
    (c1, s1), (c2, s2) = [(rng.choice(list(COLORS)), rng.choice(SHAPES)) for _ in range(2)]
    image = shape_scene(rng, [(c1, s1, "left"), (c2, s2, "right")])
    captions = [caption(rng, c1, s1, c2, s2) for _ in range(N_REFS)]
    return Item(image=image, question=QUESTION, answers=captions, qtype="caption", label=s1,
                meta={"objects": [[c1, s1], [c2, s2]]})


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="cider_d",
    loader=twin_loader(NAME, build),
    description="Synthetic COCO-Caption: 5 human-like captions of two coloured shapes.",
    max_new_tokens=24,
    twin_of="coco-caption",
))
