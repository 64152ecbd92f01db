"""Flickr30k (downstream): image captioning, scored by CIDEr-D.

Source: ``lmms-lab/flickr30k`` (one ``test`` split of 31,783 images; columns ``image``,
``caption`` (list of 5), ``sentids``, ``img_id``, ``filename``). ``nlphuji/flickr30k`` is a script
repo that ``datasets`` ≥ 4 refuses. No train split: paper train/test are carved from ``test``
80/20 by sha1 of ``img_id`` (`common.in_train`); ``carve=False`` gives the whole split as test.
The question is lmms-eval's caption instruction; ``answers`` are the reference captions;
``meta["label"]`` is the constant ``"caption"`` (captions have no class).
"""

from __future__ import annotations

from fedmllm.data.real import common as c
from fedmllm.data.record import Task
from fedmllm.data.registry import register_task

NAME = "flickr30k"
REPO = "lmms-lab/flickr30k"

load = c.caption_loader(NAME, REPO, source_split="test", id_column="img_id", captions_column="caption")

TASK = register_task(Task(
    name=NAME, role="downstream", metric="cider_d", loader=load, max_new_tokens=40,
    description=f"Flickr30k captions ({REPO}, test carved 80/20); CIDEr-D",
))
