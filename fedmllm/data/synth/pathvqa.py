"""synth-pathvqa: diagnosis questions on stained-tissue textures (twin of PathVQA).

PathVQA pairs H&E pathology images with yes/no (about half) and open questions, scored by
normalized exact match. The twin draws pink stroma with purple nuclei whose density, size and
staining encode one of four findings: normal (sparse medium nuclei), inflammation (many small dark
dots), tumor (few large dark blobs), necrosis (pale tissue, faded fragments).
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fedmllm.data.record import Task
from fedmllm.data.registry import register_task
from fedmllm.data.synth.base import Item, pick_other, twin_loader, yes_no
from fedmllm.data.synth.draw import SIZE, add_noise, jitter_color

NAME = "synth-pathvqa"
FINDINGS = ("normal", "inflammation", "tumor", "necrosis")
# finding -> (stroma colour, nucleus colour, (min, max) count, (min, max) radius)
STYLE = {
    "normal": ((235, 170, 200), (115, 50, 150), (9, 13), (3, 4)),
    "inflammation": ((230, 165, 195), (70, 20, 110), (45, 65), (1, 2)),
    "tumor": ((225, 155, 190), (85, 30, 125), (4, 7), (7, 10)),
    "necrosis": ((247, 222, 232), (205, 160, 205), (5, 9), (2, 5)),
}
OPEN = ("what does this tissue show?", "what is the finding in this image?")
YESNO = {f: f"is there evidence of {f}?" for f in FINDINGS}
YESNO["normal"] = "is this tissue normal?"
VOCAB = [*OPEN, *YESNO.values(), " ".join(FINDINGS), "yes no"]


def tissue(rng: random.Random, finding: str) -> Image.Image:
    """A noisy stained-tissue texture showing ``finding``."""
    stroma, nucleus, (n_lo, n_hi), (r_lo, r_hi) = STYLE[finding]
    image = Image.new("RGB", (SIZE, SIZE), jitter_color(rng, stroma, 8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(n_lo, n_hi)):
        x, y, r = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.randint(r_lo, r_hi)
        rx, ry = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=jitter_color(rng, nucleus, 15))
    return add_noise(image, rng, 18)


def build(rng: random.Random) -> Item:
    """One sample drawn from ``rng``: question type, then answer, then a matching image."""
    asked = rng.choice(FINDINGS)
    if rng.random() < 0.5:
        return Item(image=tissue(rng, asked), question=rng.choice(OPEN), answers=[asked],
                    qtype="open", label=asked)
    truth = rng.random() < 0.5
    finding = asked if truth else pick_other(rng, FINDINGS, asked)
    return Item(image=tissue(rng, finding), question=YESNO[asked], answers=[yes_no(truth)],
                qtype="yesno", label=yes_no(truth))


TASK = register_task(Task(
    name=NAME,
    role="downstream",
    metric="exact_match",
    loader=twin_loader(NAME, build),
    description="Synthetic PathVQA: 4 findings on pink/purple tissue textures; open and yes/no.",
    max_new_tokens=4,
    twin_of="pathvqa",
))
