"""IconQA (downstream): abstract-diagram questions, scored by exact match on the answer text.

Source: ``lmms-lab/ICON-QA`` (splits val and test, 21.5k questions each, no train; columns
``question_id``, ``query_image``, ``question``, ``choices`` (comma-separated string, empty for
fill-in-the-blank), ``answer`` (text), ``ques_type`` (choose_txt / choose_img / fill_in_blank),
``choice_image_0/1``, ``label``, ``grade``, ``skills``).
No train split: paper train/test are carved from ``val`` 80/20 by sha1 of ``question_id``
(`common.in_train`); ``carve=False`` gives the whole ``val`` as test.
The image is ``query_image``. ``choose_img`` questions (whose options are images) are skipped:
a sample carries exactly one image. ``meta["qtype"]`` is ``ques_type``; the prompt lists the
options as text and asks for the option's text (the reference is text, not a letter).
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "iconqa"
REPO = "lmms-lab/ICON-QA"
SOURCE_SPLIT = "val"
COLUMNS = ("question_id", "query_image", "question", "answer", "ques_type")
SKIPPED_TYPES = ("choose_img",)


def prompt(sample: Sample) -> str:
    """Options as text and a request for the option's text (the answer is text, not a letter)."""
    if sample.choices:
        return (f"{sample.question}\nOptions: {', '.join(sample.choices)}.\n"
                "Answer with the text of the correct option.")
    return c.short_answer_prompt(sample)


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, carve: bool = True, **options: Any) -> list[Sample]:
    """Load the carved IconQA ``split`` as normalized samples (see the module docstring)."""
    src, table = c.open_table(NAME, source, REPO, hub_org, SOURCE_SPLIT, COLUMNS, options)
    ids = [str(x) for x in table["question_id"]]
    kept = [i for i, t in enumerate(table["ques_type"]) if t not in SKIPPED_TYPES]
    side = set(c.carve(NAME, ids, split, carve))
    picked = c.subsample([i for i in kept if i in side], n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked, ["query_image"])):
        raw = row.get("choices") or ""
        choices = [x.strip() for x in str(raw).split(",") if x.strip()]
        answer = str(row["answer"]).strip()
        image = c.to_rgb(row["query_image"], NAME, f"{src} question {ids[i]}")
        samples.append(Sample(uid=c.make_uid(NAME, split, ids[i]), task=NAME, images=[image],
                              question=str(row["question"]), answers=[answer], choices=choices,
                              meta={"label": answer, "qtype": str(row["ques_type"])}))
    return samples


TASK = register_task(Task(
    name=NAME, role="downstream", metric="exact_match", loader=load, prompt=prompt,
    max_new_tokens=16, description=f"IconQA ({REPO}, val carved 80/20); exact match",
))
