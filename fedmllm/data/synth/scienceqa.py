"""synth-scienceqa: multiple-choice diagram questions (twin of ScienceQA).

ScienceQA asks 2-5-option science questions, often about a diagram, scored by option-letter
accuracy. The twin draws textbook diagrams on grid paper: 2-3 thermometers ("which thermometer
shows the highest/lowest temperature?", options left/middle/right) or two bar magnets with red N and
blue S poles ("will these magnets attract or repel each other?"). The answer is the option letter.

Options come in their natural order (left, middle, right; attract, repel), as in ScienceQA's own
magnet questions, so the letter follows from the picture: with options shuffled per sample the
~1M-parameter model stayed at chance after 300 tuning steps (it must then also find the letter of
the right text). ``shuffle_choices=True`` (a loader option) shuffles them deterministically.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, expand, letter_of, twin_loader
from fedmllm.data.synth.draw import SIZE, centered_text, jitter_color

NAME = "synth-scienceqa"
TEMPLATES = {
    "temperature": "which thermometer shows the {extreme} temperature?",
    "magnets": "will these magnets attract or repel each other?",
}
EXTREMES = ("highest", "lowest")
POSITIONS = {2: ("left", "right"), 3: ("left", "middle", "right")}
SLOTS = {2: (20, 44), 3: (12, 32, 52)}
POLES = {"n": (220, 50, 50), "s": (40, 90, 210)}
FLIP = {"n": "s", "s": "n"}
VOCAB = expand(TEMPLATES["temperature"], extreme=EXTREMES) + [
    TEMPLATES["magnets"], "left middle right attract repel A B C"]


def paper(rng: random.Random) -> Image.Image:
    """Cream grid paper: the downstream shift (upstream backgrounds are plain)."""
    image = Image.new("RGB", (SIZE, SIZE), jitter_color(rng, (246, 232, 190), 6))
    draw = ImageDraw.Draw(image)
    line = jitter_color(rng, (170, 190, 215), 10)
    for k in range(rng.randint(0, 3), SIZE, 6):
        draw.line([(k, 0), (k, SIZE)], fill=line)
        draw.line([(0, k), (SIZE, k)], fill=line)
    return image


def thermometers(rng: random.Random) -> tuple[Image.Image, str, list[str], str]:
    count = rng.choice((2, 3))
    levels = rng.sample((6, 22, 38), count)  # one 16 px patch row apart
    extreme = rng.choice(EXTREMES)
    image = paper(rng)
    draw = ImageDraw.Draw(image)
    for x, level in zip(SLOTS[count], levels):
        draw.rectangle([x - 4, 6, x + 4, 52], fill=(255, 255, 255), outline=(60, 60, 60))
        draw.rectangle([x - 3, 50 - level, x + 3, 52], fill=(220, 30, 30))
        draw.ellipse([x - 7, 48, x + 7, 62], fill=(220, 30, 30), outline=(60, 60, 60))
    pick = max if extreme == "highest" else min
    correct = POSITIONS[count][levels.index(pick(levels))]
    question = TEMPLATES["temperature"].format(extreme=extreme)
    return image, question, list(POSITIONS[count]), correct


def magnets(rng: random.Random) -> tuple[Image.Image, str, list[str], str]:
    attract = rng.random() < 0.5
    left = rng.choice(("ns", "sn"))
    # The right magnet's facing pole: opposite poles attract, like poles repel.
    facing = FLIP[left[1]] if attract else left[1]
    right = facing + FLIP[facing]
    image = paper(rng)
    draw = ImageDraw.Draw(image)
    y = 32 + rng.randint(-6, 6)
    for x0, poles in ((3, left), (35, right)):
        for k, pole in enumerate(poles):
            box = [x0 + 13 * k, y - 9, x0 + 13 * k + 13, y + 9]
            draw.rectangle(box, fill=POLES[pole], outline=(40, 40, 40))
            centered_text(draw, pole.upper(), box[0] + 6.5, y, 12, fill=(255, 255, 255))
    choices = ["attract", "repel"]
    return image, TEMPLATES["magnets"], choices, "attract" if attract else "repel"


def build(rng: random.Random, shuffle_choices: bool = False) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    qtype = rng.choice(("temperature", "magnets"))
    image, question, choices, correct = (thermometers if qtype == "temperature" else magnets)(rng)
    if shuffle_choices:
        rng.shuffle(choices)
    return Item(image=image, question=question, answers=[letter_of(choices, correct)],
                choices=choices, qtype=qtype, label=correct)


TASK = register_task(Task(
    name=NAME,
    role="downstream",
    metric="option_letter",
    loader=twin_loader(NAME, build, options=("shuffle_choices",)),
    description="Synthetic ScienceQA: thermometer and magnet diagrams, 2-3 options, letter answer.",
    max_new_tokens=4,
    twin_of="scienceqa",
))
