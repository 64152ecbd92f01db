"""easyvqa: the real `easy-vqa` dataset (64x64 shape images, 13 answers), bundled in its wheel.

The package ships 4,000 train and 1,000 test images with 38,575 / 9,673 questions (colour, shape and
yes/no questions about one shape). Train and test come from the package's own splits; ``n``
questions are drawn in a seed-determined order (``n=None``: all of them). Images are shared between
the samples of one call that ask about the same picture.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Any, Optional

from PIL import Image

from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task
from fedmllm.errors import UserError

NAME = "easyvqa"
COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], dict[int, str]]:
    """(questions, answers, image ids, image paths) of one package split, read once."""
    import easy_vqa

    if split == "train":
        texts, answers, ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        texts, answers, ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return tuple(texts), tuple(answers), tuple(ids), paths


def qtype_of(answer: str) -> str:
    """Question type from the answer's class: colour, shape or yes/no."""
    return "color" if answer in COLORS else "shape" if answer in SHAPES else "yesno"


def load(split: str = "test", n: Optional[int] = None, seed: int = 0,
         source: Optional[str] = None, **options: Any) -> list[Sample]:
    """``n`` questions of the package's ``split`` in a seed-determined order."""
    if source is not None or options:
        raise UserError(f"task {NAME!r} reads the installed easy-vqa package; "
                        "it takes no source or options")
    texts, answers, ids, paths = _split(split)
    total = len(texts)
    count = total if n is None else n
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= total:
        raise UserError(f"task {NAME!r} {split} has {total} questions; "
                        f"n must be 0..{total}, got {n!r}")
    order = list(range(total))
    random.Random(f"{NAME}/{split}/{seed}").shuffle(order)  # str seeds hash with SHA-512: stable
    images: dict[int, Image.Image] = {}
    samples = []
    for q in order[:count]:
        image_id = ids[q]
        if image_id not in images:
            with Image.open(paths[image_id]) as im:
                images[image_id] = im.convert("RGB")
        samples.append(Sample(
            uid=f"{NAME}/{split}/{q}", task=NAME, images=[images[image_id]], question=texts[q],
            answers=[answers[q]], meta={"label": answers[q], "qtype": qtype_of(answers[q]),
                                        "image_id": image_id},
        ))
    return samples


def vocabulary() -> list[str]:
    """Every word of every easy-vqa question and answer (both splits)."""
    words: set[str] = set()
    for split in ("train", "test"):
        texts, answers, _, _ = _split(split)
        for text in (*texts, *answers):
            words.update(re.findall(r"\w+|[^\w\s]+", text.lower()))
    return [" ".join(sorted(words))]


TASK = register_task(Task(
    name=NAME,
    role="extra",
    metric="exact_match",
    loader=load,
    description="easy-vqa (real, offline): colour, shape and yes/no questions on 64x64 shapes.",
    max_new_tokens=4,
))
