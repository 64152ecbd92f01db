"""synth-flickr30k: caption an outdoor scene of people, animals and things (twin of Flickr30k).

Flickr30k has 5 human captions per photo of people in everyday scenes, scored by CIDEr-D. The twin
draws sky and grass, a sun or a moon, a subject (a man, two people, a dog: stick drawings) and a
thing (a tree, a house, a car), and gives 5 paraphrases whose vocabulary differs from the COCO twin.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, twin_loader
from fedmllm.data.synth.draw import SIZE, jitter_color

NAME = "synth-flickr30k"
QUESTION = "describe this photo in one sentence."
SUBJECTS = ("a man", "two people", "a dog")
THINGS = ("a tree", "a house", "a car")
TIMES = {"day": ("on a sunny day", "in the sun"), "night": ("at night", "in the dark")}
PARAPHRASES = (
    "{s} next to {t} {w}",
    "{s} standing near {t} {w}",
    "{s} outside by {t} {w}",
    "{t} and {s} {w}",
    "{s} close to {t} {w2}",
)
VOCAB = [QUESTION] + [text for p in PARAPHRASES for when, when2 in TIMES.values()
                      for text in expand(p, s=SUBJECTS, t=THINGS, w=[when], w2=[when2])]


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


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    subject, name, time = rng.choice(SUBJECTS), rng.choice(THINGS), rng.choice(list(TIMES))
    when, when2 = TIMES[time]
    captions = [p.format(s=subject, t=name, w=when, w2=when2) for p in PARAPHRASES]
    return Item(image=scene(rng, subject, name, time), question=QUESTION, answers=captions,
                qtype="caption", label=name.split()[-1])


TASK = register_task(Task(
    name=NAME,
    role="downstream",
    metric="cider_d",
    loader=twin_loader(NAME, build),
    description="Synthetic Flickr30k: 5 captions of stick-figure outdoor scenes, day or night.",
    max_new_tokens=16,
    twin_of="flickr30k",
))
