"""ScienceQA (downstream): multiple choice, scored by option-letter accuracy.

Source: ``derek-thomas/ScienceQA`` (splits train/validation/test; columns ``image`` (may be None),
``question``, ``choices`` (list), ``answer`` (int index), ``hint``, ``subject``, ``category``, ...).
Paper train → ``train``, paper test → ``test``. Stable id: the row index within the split.
Items without an image (about half of ScienceQA) get a blank white 224×224 image, so every
sample has exactly one image; ``meta["blank_image"]`` marks them. The answer is the option
letter (``"A"``, ``"B"``, ...); ``meta["label"]`` is that letter and the hint, when present, is
given to the model as context (lmms-eval's ``Context: ...`` prompt).
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import LETTERS, Sample, Task, default_prompt
from fedmllm.data.registry import register_task

NAME = "scienceqa"
REPO = "derek-thomas/ScienceQA"
SOURCE_SPLITS = {"train": "train", "test": "test"}
COLUMNS = ("image", "question", "choices", "answer")


def prompt(sample: Sample) -> str:
    """``Context: <hint>`` (when there is one), then the question, options and letter request."""
    hint = sample.meta.get("hint")
    return f"Context: {hint}\n{default_prompt(sample)}" if hint else default_prompt(sample)


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, **options: Any) -> list[Sample]:
    """Load ScienceQA ``split`` as normalized samples (see the module docstring)."""
    src, table = c.open_table(NAME, source, REPO, hub_org, SOURCE_SPLITS[split], COLUMNS, options)
    picked = c.subsample(range(len(table)), n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        choices = [str(x) for x in row["choices"]]
        letter = LETTERS[int(row["answer"])]
        blank = row["image"] is None
        image = c.blank_image() if blank else c.to_rgb(row["image"], NAME, f"{src} row {i}")
        meta = {"label": letter, "blank_image": blank}
        for key in ("hint", "subject", "category"):
            if row.get(key):
                meta[key] = str(row[key])
        samples.append(Sample(uid=c.make_uid(NAME, split, i), task=NAME, images=[image],
                              question=str(row["question"]), answers=[letter], choices=choices,
                              meta=meta))
    return samples


TASK = register_task(Task(
    name=NAME, role="downstream", metric="option_letter", loader=load, prompt=prompt,
    max_new_tokens=4, description=f"ScienceQA multiple choice ({REPO}); option-letter accuracy",
))
