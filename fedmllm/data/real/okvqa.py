"""OK-VQA (upstream): outside-knowledge VQA, scored by VQA accuracy over 10 answers.

Source: ``lmms-lab/OK-VQA`` (one split ``val2014`` of 5,046 questions; columns ``question_id``,
``question``, ``answers`` (10), ``image``, ``question_type``, ``answer_type``, ...).
No train split: paper train/test are carved from ``val2014`` 80/20 by sha1 of ``question_id``
(`common.in_train`); ``carve=False`` gives the whole split as test (lmms-eval's
``ok_vqa_val2014``). ``meta["label"]`` is the most frequent answer, ``meta["qtype"]`` the
``question_type`` when present.
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "okvqa"
REPO = "lmms-lab/OK-VQA"
SOURCE_SPLIT = "val2014"
COLUMNS = ("question_id", "question", "answers", "image")


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, carve: bool = True, **options: Any) -> list[Sample]:
    """Load the carved OK-VQA ``split`` as normalized samples (see the module docstring)."""
    src, table = c.open_table(NAME, source, REPO, hub_org, SOURCE_SPLIT, COLUMNS, options)
    ids = [str(x) for x in table["question_id"]]
    picked = c.subsample(c.carve(NAME, ids, split, carve), n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        answers = [str(a).strip() for a in row["answers"]]
        meta = {"label": c.majority(answers)}
        if row.get("question_type"):
            meta["qtype"] = str(row["question_type"])
        samples.append(Sample(uid=c.make_uid(NAME, split, ids[i]), task=NAME,
                              images=[c.to_rgb(row["image"], NAME, f"{src} question {ids[i]}")],
                              question=str(row["question"]), answers=answers, meta=meta))
    return samples


TASK = register_task(Task(
    name=NAME, role="upstream", metric="vqa_accuracy", loader=load,
    prompt=c.short_answer_prompt, max_new_tokens=8,
    description=f"OK-VQA ({REPO}, val2014 carved 80/20); VQA accuracy",
))
