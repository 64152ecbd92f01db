"""Flickr30k (downstream): image captioning, scored by CIDEr-D.

Source: ``lmms-lab/flickr30k`` (one ``test`` split of 31,783 images; columns ``image``,
``caption`` (list of 5), ``sentids``, ``img_id``, ``filename``). ``nlphuji/flickr30k`` is a script
repo that ``datasets`` ≥ 4 refuses. No train split: paper train/test are carved from ``test``
80/20 by sha1 of ``img_id`` (`common.in_train`); ``carve=False`` gives the whole split as test.
The question is lmms-eval's caption instruction; ``answers`` are the reference captions;
``meta["label"]`` is the constant ``"caption"`` (captions have no class).
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "flickr30k"
REPO = "lmms-lab/flickr30k"
SOURCE_SPLIT = "test"
COLUMNS = ("image", "caption", "img_id")


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, carve: bool = True, **options: Any) -> list[Sample]:
    """Load the carved Flickr30k ``split`` as normalized samples (see the module docstring)."""
    c.check_options(NAME, options, c.HUB_OPTIONS)
    src = c.resolve_source(source, REPO, hub_org)
    table = c.load_table(NAME, src, SOURCE_SPLIT, **options)
    c.require_columns(NAME, src, table, COLUMNS)
    ids = [str(x) for x in table["img_id"]]
    picked = c.subsample(c.carve(NAME, ids, split, carve), n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        image = c.to_rgb(row["image"], NAME, f"{src} image {ids[i]}")
        samples.append(Sample(uid=c.make_uid(NAME, split, ids[i]), task=NAME, images=[image],
                              question=c.CAPTION_PROMPT,
                              answers=[str(x).strip() for x in row["caption"]],
                              meta={"label": "caption"}))
    return samples


TASK = register_task(Task(
    name=NAME, role="downstream", metric="cider_d", loader=load, max_new_tokens=40,
    description=f"Flickr30k captions ({REPO}, test carved 80/20); CIDEr-D",
))
