"""synth-ocrvqa: questions about a book cover (twin of OCR-VQA).

OCR-VQA asks for a cover's title, author and genre, and yes/no genre questions, scored by exact
match. The twin draws a cover whose colour encodes the genre and whose title word is printed on a
white band; it asks for the title, the genre, or whether the book is of a given genre.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, pick_other, twin_loader, yes_no
from fedmllm.data.synth.draw import COLORS, centered_text, jitter_color, light_canvas

NAME = "synth-ocrvqa"
TITLES = ("moon", "rain", "fire", "gold", "wind", "star", "snow", "home")
GENRES = {"romance": "red", "travel": "blue", "cooking": "green", "history": "yellow"}
TEMPLATES = {
    "title": "what is the title of this book?",
    "genre": "what is the genre of this book?",
    "genre_yesno": "is this a {genre} book?",
}
VOCAB = [text for t in TEMPLATES.values() for text in expand(t, genre=list(GENRES))] + [
    " ".join(TITLES), "yes no"]


def cover_image(rng: random.Random, title: str, genre: str) -> Image.Image:
    """A cover in the genre's colour, with a white title band and a dark spine."""
    image = light_canvas(rng)
    draw = ImageDraw.Draw(image)
    x0, y0 = rng.randint(3, 6), rng.randint(2, 4)
    x1, y1 = 63 - rng.randint(3, 6), 63 - rng.randint(2, 4)
    draw.rectangle([x0, y0, x1, y1], fill=jitter_color(rng, COLORS[GENRES[genre]]))
    draw.rectangle([x0, y0, x0 + 4, y1], fill=(40, 40, 40))
    band = rng.randint(18, 24)
    draw.rectangle([x0 + 6, band, x1 - 2, band + 20], fill=(250, 250, 250))
    centered_text(draw, title, (x0 + x1 + 4) / 2, band + 10, 18, fill=(15, 15, 20))
    return image


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    title, genre = rng.choice(TITLES), rng.choice(list(GENRES))
    qtype = rng.choice(("title", "genre", "genre_yesno"))
    asked = genre
    if qtype == "title":
        answer = title
    elif qtype == "genre":
        answer = genre
    else:
        truth = rng.random() < 0.5
        answer = yes_no(truth)
        if not truth:  # ask about a genre this cover does not have
            asked = pick_other(rng, list(GENRES), genre)
    return Item(image=cover_image(rng, title, genre), question=TEMPLATES[qtype].format(genre=asked),
                answers=[answer], qtype=qtype, label=answer)


TASK = register_task(Task(
    name=NAME,
    role="upstream",
    metric="exact_match",
    loader=twin_loader(NAME, build),
    description="Synthetic OCR-VQA: book cover title (8 words) and genre (cover colour).",
    max_new_tokens=4,
    twin_of="ocrvqa",
))
