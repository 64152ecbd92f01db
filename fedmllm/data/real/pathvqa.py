"""PathVQA (downstream): pathology questions, scored by normalized exact match.

Source: ``flaviagiammarino/path-vqa`` (splits train/validation/test; columns ``image``,
``question``, ``answer``). Paper train → ``train``, paper test → ``test``. Stable id: the row
index within the split. ``meta["qtype"]`` is ``"yes/no"`` for yes/no answers, else ``"open"``
(the dataset's two question kinds).
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "pathvqa"
REPO = "flaviagiammarino/path-vqa"
SOURCE_SPLITS = {"train": "train", "test": "test"}
COLUMNS = ("image", "question", "answer")


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, **options: Any) -> list[Sample]:
    """Load PathVQA ``split`` as normalized samples (see the module docstring)."""
    src, table = c.open_table(NAME, source, REPO, hub_org, SOURCE_SPLITS[split], COLUMNS, options)
    picked = c.subsample(range(len(table)), n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        answer = str(row["answer"]).strip()
        qtype = "yes/no" if answer.lower() in ("yes", "no") else "open"
        samples.append(Sample(uid=c.make_uid(NAME, split, i), task=NAME,
                              images=[c.to_rgb(row["image"], NAME, f"{src} row {i}")],
                              question=str(row["question"]), answers=[answer],
                              meta={"label": answer, "qtype": qtype}))
    return samples


TASK = register_task(Task(
    name=NAME, role="downstream", metric="exact_match", loader=load,
    prompt=c.short_answer_prompt, max_new_tokens=16,
    description=f"PathVQA ({REPO}); exact match",
))
