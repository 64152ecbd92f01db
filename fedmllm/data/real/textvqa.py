"""TextVQA (upstream): questions about text in images, scored by VQA accuracy over 10 answers.

Source: ``lmms-lab/textvqa`` (splits train/validation/test, test without answers; columns
``question_id``, ``question``, ``answers`` (10), ``image``, ``ocr_tokens``, ...).
Paper train → ``train``, paper test → ``validation`` (the split everyone reports).
Stable id: ``question_id``. ``meta["label"]`` is the most frequent answer.
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "textvqa"
REPO = "lmms-lab/textvqa"
SOURCE_SPLITS = {"train": "train", "test": "validation"}
COLUMNS = ("question_id", "question", "answers", "image")


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, **options: Any) -> list[Sample]:
    """Load TextVQA ``split`` as normalized samples (see the module docstring)."""
    src, table = c.open_table(NAME, source, REPO, hub_org, SOURCE_SPLITS[split], COLUMNS, options)
    picked = c.subsample(range(len(table)), n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        sid = row["question_id"]
        answers = [str(a).strip() for a in row["answers"] or []]
        samples.append(Sample(uid=c.make_uid(NAME, split, sid), task=NAME,
                              images=[c.to_rgb(row["image"], NAME, f"{src} question {sid}")],
                              question=str(row["question"]), answers=answers,
                              meta={"label": c.majority(answers)}))
    return samples


TASK = register_task(Task(
    name=NAME, role="upstream", metric="vqa_accuracy", loader=load,
    prompt=c.short_answer_prompt, max_new_tokens=8,
    description=f"TextVQA ({REPO}, validation as test); VQA accuracy",
))
