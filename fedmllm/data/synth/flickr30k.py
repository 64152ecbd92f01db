"""synth-flickr30k: caption an outdoor scene of people, animals and things (twin of Flickr30k).

Flickr30k has 5 human captions per photo of people in everyday scenes, scored by CIDEr-D. The twin
draws sky and grass, a sun or a moon, a subject (a man, two people, a dog: stick drawings) and a
thing (a tree, a house, a car), and five captions from a weighted grammar
(`fedmllm.data.synth.captions`): synonyms for who and what ("a man", "a guy", "someone"), what the
subject does, optional place and time words, several sentence orders. Its vocabulary differs from
the COCO twin's; the training target (the first reference) is one such draw.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, twin_loader
from fedmllm.data.synth.captions import Choice, compose, pick, words
from fedmllm.data.synth.draw import SIZE, jitter_color

NAME = "synth-flickr30k"
QUESTION = "describe this photo in one sentence."
N_REFS = 5
SUBJECTS = ("a man", "two people", "a dog")
THINGS = ("a tree", "a house", "a car")
TIMES = ("day", "night")

# How annotators name what they see (weights: how often), what the subject does, where and when.
WHO: dict[str, Choice] = {
    "a man": (("a man", 0.45), ("a person", 0.15), ("a guy", 0.1), ("someone", 0.1), ("a young man", 0.1),
              ("a lone man", 0.1)),
    "two people": (("two people", 0.45), ("a couple", 0.15), ("two friends", 0.15), ("two men", 0.1),
                   ("a pair of people", 0.15)),
    "a dog": (("a dog", 0.45), ("a brown dog", 0.15), ("a puppy", 0.1), ("a small dog", 0.15),
              ("a pet dog", 0.15)),
}
WHAT: dict[str, Choice] = {
    "a tree": (("a tree", 0.45), ("a big tree", 0.15), ("a green tree", 0.1), ("a leafy tree", 0.15),
               ("a tall tree", 0.15)),
    "a house": (("a house", 0.45), ("a small house", 0.15), ("a cottage", 0.1), ("a home", 0.15),
                ("a little house", 0.15)),
    "a car": (("a car", 0.45), ("a parked car", 0.2), ("a small car", 0.1), ("a vehicle", 0.1),
              ("an automobile", 0.15)),
}
DOING: dict[str, Choice] = {
    "a man": (("standing next to", 0.3), ("standing by", 0.15), ("standing near", 0.15), ("waiting by", 0.1),
              ("next to", 0.15), ("posing in front of", 0.15)),
    "two people": (("standing next to", 0.3), ("standing by", 0.15), ("standing near", 0.15),
                   ("talking near", 0.1), ("next to", 0.15), ("posing in front of", 0.15)),
    "a dog": (("standing next to", 0.3), ("standing by", 0.15), ("playing near", 0.15),
              ("waiting by", 0.1), ("next to", 0.15), ("running past", 0.15)),
}
WHEN: dict[str, Choice] = {
    "day": (("on a sunny day", 0.3), ("in the sun", 0.15), ("during the day", 0.15), ("in daylight", 0.1),
            ("", 0.3)),
    "night": (("at night", 0.3), ("in the dark", 0.15), ("under the moon", 0.15), ("late at night", 0.1),
              ("", 0.3)),
}
WHERE: Choice = (("", 0.55), ("on the grass", 0.15), ("in a field", 0.1), ("outside", 0.1), ("in a park", 0.1))
FRAMES: Choice = (
    ("{S} {V} {T} {P} {W}", 0.35),
    ("{S} outside by {T} {W}", 0.07),
    ("{S} on the grass near {T} {W}", 0.07),
    ("{T} and {S} {W}", 0.07),
    ("{S} and {T} {W}", 0.06),
    ("{W1} , {S} {V} {T}", 0.07),
    ("{S} in a field with {T} {W}", 0.06),
    ("a photo of {S} {V} {T}", 0.05),
    ("{S} is {V} {T} {W}", 0.07),
    ("{T} with {S} beside it {W}", 0.05),
    ("an outdoor scene with {S} and {T} {W}", 0.04),
    ("{S} spending time near {T} {W}", 0.04),
)
VOCAB = [QUESTION] + words(FRAMES, WHERE, *WHO.values(), *WHAT.values(), *DOING.values(),
                           *WHEN.values())


def caption(rng: random.Random, subject: str, name: str, time: str) -> str:
    """One human-like caption of ``subject`` beside ``name`` by day or night."""
    return compose(rng, pick(rng, FRAMES), {"S": WHO[subject], "V": DOING[subject], "T": WHAT[name],
                                            "P": WHERE, "W": WHEN[time],
                                            "W1": tuple(w for w in WHEN[time] if w[0])})


def person(draw: ImageDraw.ImageDraw, x: float, ground: float, ink) -> None:
    """A stick figure standing on ``ground`` (about 24 px tall)."""
    draw.ellipse([x - 3, ground - 24, x + 3, ground - 18], fill=ink)
    draw.line([(x, ground - 18), (x, ground - 8)], fill=ink, width=2)
    draw.line([(x - 5, ground - 14), (x + 5, ground - 14)], fill=ink, width=2)
    draw.line([(x, ground - 8), (x - 4, ground)], fill=ink, width=2)
    draw.line([(x, ground - 8), (x + 4, ground)], fill=ink, width=2)


def dog(draw: ImageDraw.ImageDraw, x: float, ground: float, ink) -> None:
    """A blocky side-view dog (about 16 px tall) standing on ``ground``."""
    draw.rectangle([x - 8, ground - 11, x + 6, ground - 5], fill=ink)
    draw.rectangle([x + 4, ground - 16, x + 10, ground - 9], fill=ink)
    for lx in (x - 7, x - 4, x + 1, x + 4):
        draw.line([(lx, ground - 5), (lx, ground)], fill=ink, width=2)
    draw.line([(x - 8, ground - 10), (x - 12, ground - 15)], fill=ink, width=2)


def thing(draw: ImageDraw.ImageDraw, name: str, x: float, g: float, rng: random.Random) -> None:
    """A tree, a house or a car standing on the ground line ``g``."""
    if name == "a tree":
        draw.rectangle([x - 2, g - 14, x + 2, g], fill=(110, 70, 30))
        draw.ellipse([x - 10, g - 32, x + 10, g - 12], fill=jitter_color(rng, (30, 130, 40)))
    elif name == "a house":
        draw.rectangle([x - 10, g - 16, x + 10, g], fill=jitter_color(rng, (230, 210, 170)))
        draw.polygon([(x - 13, g - 16), (x + 13, g - 16), (x, g - 28)], fill=(150, 40, 30))
        draw.rectangle([x - 3, g - 9, x + 3, g], fill=(90, 60, 40))
    else:
        body = jitter_color(rng, rng.choice(((200, 30, 30), (30, 60, 190), (240, 240, 240))))
        draw.rectangle([x - 12, g - 12, x + 12, g - 4], fill=body)
        draw.rectangle([x - 6, g - 18, x + 6, g - 12], fill=body)
        for wx in (x - 7, x + 7):
            draw.ellipse([wx - 4, g - 8, wx + 4, g], fill=(20, 20, 20))


def scene(rng: random.Random, subject: str, name: str, time: str) -> Image.Image:
    """Sky, grass, sun or moon, the subject on one side and the thing on the other."""
    day = time == "day"
    sky, grass = ((135, 195, 240), (70, 150, 60)) if day else ((15, 20, 60), (25, 60, 30))
    image = Image.new("RGB", (SIZE, SIZE), jitter_color(rng, sky, 8))
    draw = ImageDraw.Draw(image)
    ground = 50 + rng.randint(-2, 2)
    draw.rectangle([0, ground, SIZE, SIZE], fill=jitter_color(rng, grass, 8))
    sx = rng.choice((10, 54))
    if day:
        draw.ellipse([sx - 7, 3, sx + 7, 17], fill=(250, 215, 40))
    else:
        draw.ellipse([sx - 6, 4, sx + 6, 16], fill=(235, 235, 205))
    ink = (30, 30, 30) if day else (225, 225, 225)
    left, right = (16, 46) if rng.random() < 0.5 else (46, 16)
    thing(draw, name, right, ground + 2, rng)
    if subject == "a man":
        person(draw, left, ground + 2, ink)
    elif subject == "two people":
        person(draw, left - 6, ground + 2, ink)
        person(draw, left + 6, ground + 2, ink)
    else:
        dog(draw, left, ground + 2, (150, 90, 40) if day else (210, 180, 140))
    return image


def plain_caption(objects: list[str]) -> str:
    """The grammar's most common wording of ``objects`` ([subject, thing, time], as in a sample's
    ``meta["objects"]``): "a man standing next to a tree on a sunny day"."""
    subject, thing, time = objects
    return f"{subject} standing next to {thing} {'on a sunny day' if time == 'day' else 'at night'}"


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: subject, thing and time, the image, then five captions."""
    subject, name, time = rng.choice(SUBJECTS), rng.choice(THINGS), rng.choice(TIMES)
    image = scene(rng, subject, name, time)
    captions = [caption(rng, subject, name, time) for _ in range(N_REFS)]
    return Item(image=image, question=QUESTION, answers=captions, qtype="caption",
                label=name.split()[-1], meta={"objects": [subject, name, time]})


TASK = register_task(Task(
    name=NAME,
    role="downstream",
    metric="cider_d",
    loader=twin_loader(NAME, build),
    description="Synthetic Flickr30k: 5 human-like captions of stick-figure outdoor scenes, day or night.",
    max_new_tokens=20,
    twin_of="flickr30k",
))
