"""The one normalized record every task produces, and the `Task` description.

A task (lmms-eval style) is a few small functions: its loader, its prompt builder, its training
target, its answer parser, and the name of its metric. Real hub datasets and their offline twins
produce the same `Sample`, so everything downstream (collation, training, evaluation, partitioning)
is one code path.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from PIL import Image

ROLES = ("downstream", "upstream", "extra")
SPLITS = ("train", "test")
LETTERS = string.ascii_uppercase


@dataclass
class Sample:
    """One normalized example.

    Attributes:
        uid: unique, stable id within its task (``"<task>/<split>/<source id>"``).
        task: registry name of the task that produced it.
        images: zero or more RGB PIL images (ScienceQA items may have none).
        question: the question or instruction text, without the options.
        answers: reference answers. One for exact match / option letter (the letter, e.g. ``"B"``),
            ten for VQA accuracy, several captions for CIDEr.
        choices: option texts for multiple-choice tasks (empty otherwise).
        meta: task metadata: ``label`` (used by label-skew partitioners), question type,
            MME ``category`` and ``pair`` id, etc. Values must be JSON-serializable.
    """

    uid: str
    task: str
    images: list[Image.Image]
    question: str
    answers: list[str]
    choices: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The label used for label-skew partitioning (defaults to the first answer)."""
        return str(self.meta.get("label", self.answers[0] if self.answers else ""))


def format_choices(choices: list[str]) -> str:
    return " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))


def default_prompt(sample: Sample) -> str:
    """Question, then options and an instruction for multiple choice."""
    if sample.choices:
        return (
            f"{sample.question} Options: {format_choices(sample.choices)}. "
            "Answer with the option's letter."
        )
    return sample.question


def first_answer(sample: Sample) -> str:
    """Training target: the first reference answer."""
    return sample.answers[0]


def strip_answer(prediction: str, sample: Sample) -> str:
    """Default answer parser: the generated text, stripped."""
    return prediction.strip()


# Loader signature: loader(split, n, seed, source, **options) -> list[Sample]
#   split:  "train" or "test" (tasks without a train split carve both deterministically)
#   n:      number of samples (None = all; synthetic twins need an int)
#   seed:   for synthetic generation and deterministic subsampling
#   source: hub id or local folder (real tasks); None = the task's default
Loader = Callable[..., list[Sample]]


@dataclass(frozen=True)
class Task:
    """A benchmark task: loader + prompt + target + parser + metric name."""

    name: str
    role: str
    metric: str
    loader: Loader
    description: str = ""
    prompt: Callable[[Sample], str] = default_prompt
    target: Callable[[Sample], str] = first_answer
    parse: Callable[[str, Sample], str] = strip_answer
    max_new_tokens: int = 8
    twin_of: Optional[str] = None
    default_source: Optional[str] = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"task {self.name!r}: role must be one of {ROLES}, got {self.role!r}")

    def load(self, split: str = "test", n: Optional[int] = None, seed: int = 0,
             source: Optional[str] = None, **options: Any) -> list[Sample]:
        """Load ``n`` samples of ``split`` as normalized `Sample` records."""
        from fedmllm.errors import UserError

        if split not in SPLITS:
            raise UserError(f"unknown split {split!r} for task {self.name!r}; valid: {', '.join(SPLITS)}")
        return self.loader(split=split, n=n, seed=seed, source=source or self.default_source, **options)
