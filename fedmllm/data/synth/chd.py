"""synth-chd: diagnosis from a chest x-ray-like image (twin of the private CHD dataset).

CHD (congenital heart disease) images are grayscale chest radiographs. The twin draws a noisy
grayscale torso with dark lungs and a bright heart whose size, position or a dark central defect
encodes the diagnosis: normal, enlarged heart, septal defect, dextrocardia (heart on the other
side). Questions ask the diagnosis or yes/no about the heart; exact match.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageFilter

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, pick_other, twin_loader, yes_no
from fedmllm.data.synth.draw import SIZE, add_noise

NAME = "synth-chd"
DIAGNOSES = ("normal", "enlarged heart", "septal defect", "dextrocardia")
OPEN = ("what is the diagnosis?", "what does this chest x-ray show?")
YESNO = {"normal": "is this heart normal?", "enlarged heart": "is the heart enlarged?"}
VOCAB = [*OPEN, *YESNO.values(), " ".join(DIAGNOSES), "yes no"]


def xray(rng: random.Random, diagnosis: str) -> Image.Image:
    """A noisy grayscale chest x-ray whose heart shows ``diagnosis``."""
    def j(v: float, k: int = 2) -> float:
        return v + rng.randint(-k, k)

    image = Image.new("L", (SIZE, SIZE), rng.randint(5, 25))
    draw = ImageDraw.Draw(image)
    draw.ellipse([j(4), j(2), j(60), j(66)], fill=rng.randint(95, 115))
    draw.ellipse([j(9), j(8), j(29), j(52)], fill=rng.randint(35, 50))
    draw.ellipse([j(35), j(8), j(55), j(52)], fill=rng.randint(35, 50))
    draw.rectangle([j(30, 1), 0, j(34, 1), SIZE], fill=rng.randint(120, 140))
    cx = 26 if diagnosis == "dextrocardia" else 38
    half_w, half_h = (16, 12) if diagnosis == "enlarged heart" else (9, 8)
    cx, cy = j(cx), j(40)
    draw.ellipse([cx - j(half_w, 1), cy - j(half_h, 1), cx + j(half_w, 1), cy + j(half_h, 1)],
                 fill=rng.randint(175, 200))
    if diagnosis == "septal defect":
        draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=rng.randint(40, 60))
    image = add_noise(image.filter(ImageFilter.BoxBlur(1)), rng, 14)
    return image.convert("RGB")


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    if rng.random() < 0.5:
        diagnosis = rng.choice(DIAGNOSES)
        return Item(image=xray(rng, diagnosis), question=rng.choice(OPEN), answers=[diagnosis],
                    qtype="diagnosis", label=diagnosis)
    asked = rng.choice(list(YESNO))
    truth = rng.random() < 0.5
    diagnosis = asked if truth else pick_other(rng, DIAGNOSES, asked)
    return Item(image=xray(rng, diagnosis), question=YESNO[asked], answers=[yes_no(truth)],
                qtype="yesno", label=yes_no(truth))


TASK = register_task(Task(
    name=NAME,
    role="downstream",
    metric="exact_match",
    loader=twin_loader(NAME, build),
    description="Synthetic CHD: grayscale chest x-ray, 4 diagnoses (heart size, side, defect).",
    max_new_tokens=4,
    twin_of="chd",
))
