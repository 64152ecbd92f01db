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

from fedmllm.data.real import common as c
from fedmllm.data.record import Task
from fedmllm.data.registry import register_task

NAME = "coco-caption"
REPO = "lmms-lab/COCO-Caption"

load = c.caption_loader(NAME, REPO, source_split="val", id_column="question_id", captions_column="answer")

TASK = register_task(Task(
    name=NAME, role="upstream", metric="cider_d", loader=load, max_new_tokens=40,
    description=f"COCO 2014 captions ({REPO}, val carved 80/20); CIDEr-D",
))
