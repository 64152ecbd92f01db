"""COCO-Caption (upstream): COCO 2014 captioning, scored by CIDEr-D.

Source: ``lmms-lab/COCO-Caption`` (splits ``val`` (40.5k images, 5+ captions each) and ``test``
(no public captions); columns ``question_id`` (e.g. ``COCO_val2014_000000391895.jpg``),
``image``, ``question``, ``answer`` (list of captions), ``id``, ``file_name``, ...).
No usable train split: paper train/test are carved from ``val`` 80/20 by sha1 of
``question_id`` (`common.in_train`); ``carve=False`` gives the whole ``val`` as test (as
lmms-eval's ``coco2014_cap_val``). The question is lmms-eval's caption instruction;
``meta["label"]`` is the constant ``"caption"``.
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "coco-caption"
REPO = "lmms-lab/COCO-Caption"
SOURCE_SPLIT = "val"
COLUMNS = ("image", "answer", "question_id")


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, carve: bool = True, **options: Any) -> list[Sample]:
    """Load the carved COCO-Caption ``split`` as normalized samples (see the module docstring)."""
    c.check_options(NAME, options, c.HUB_OPTIONS)
    src = c.resolve_source(source, REPO, hub_org)
    table = c.load_table(NAME, src, SOURCE_SPLIT, **options)
    c.require_columns(NAME, src, table, COLUMNS)
    ids = [str(x) for x in table["question_id"]]
    picked = c.subsample(c.carve(NAME, ids, split, carve), n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        image = c.to_rgb(row["image"], NAME, f"{src} image {ids[i]}")
        samples.append(Sample(uid=c.make_uid(NAME, split, ids[i]), task=NAME, images=[image],
                              question=c.CAPTION_PROMPT,
                              answers=[str(x).strip() for x in row["answer"]],
                              meta={"label": "caption"}))
    return samples


TASK = register_task(Task(
    name=NAME, role="upstream", metric="cider_d", loader=load, max_new_tokens=40,
    description=f"COCO 2014 captions ({REPO}, val carved 80/20); CIDEr-D",
))
