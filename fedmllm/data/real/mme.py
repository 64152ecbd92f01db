"""MME (upstream): yes/no perception and cognition questions, scored by MME acc and acc+.

Source: ``lmms-lab/MME`` (one ``test`` split of 2,374 questions, two per image; columns
``question_id`` (the image key, e.g. ``code_reasoning/0020.png``, shared by the image's two
questions), ``image``, ``question``, ``answer`` (Yes/No), ``category``).
No train split: paper train/test are carved from ``test`` 80/20 by sha1 of the pair key
``question_id``, so both questions of an image fall on the same side; ``carve=False`` gives the
whole split as test (comparable with published MME scores). ``n`` draws whole pairs in a seeded
order and stops at ``n`` questions (so an odd ``n`` leaves one pair half-drawn).
``meta``: ``category``, ``pair`` (= ``question_id``, for acc+), ``qtype`` (= category),
``label`` (Yes/No). Stable id: ``<question_id>/<k>``, k = 0, 1 in source order.
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "mme"
REPO = "lmms-lab/MME"
SOURCE_SPLIT = "test"
COLUMNS = ("question_id", "image", "question", "answer", "category")


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, carve: bool = True, **options: Any) -> list[Sample]:
    """Load the carved MME ``split`` as normalized samples, pairs kept together."""
    c.check_options(NAME, options, c.HUB_OPTIONS)
    c.check_n(n)
    src = c.resolve_source(source, REPO, hub_org)
    table = c.load_table(NAME, src, SOURCE_SPLIT, **options)
    c.require_columns(NAME, src, table, COLUMNS)
    pairs: dict[str, list[int]] = {}
    for i, key in enumerate(table["question_id"]):
        pairs.setdefault(str(key), []).append(i)
    keys = list(pairs)
    side = [keys[i] for i in c.carve(NAME, keys, split, carve)]
    order = side if n is None else c.subsample(side, len(side), seed)
    picked = [i for key in order for i in pairs[key]][:n]
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        key = str(row["question_id"])
        answer = str(row["answer"]).strip()
        image = c.to_rgb(row["image"], NAME, f"{src} image {key}")
        samples.append(Sample(uid=c.make_uid(NAME, split, f"{key}/{pairs[key].index(i)}"),
                              task=NAME, images=[image],
                              question=str(row["question"]), answers=[answer],
                              meta={"label": answer, "category": str(row["category"]),
                                    "qtype": str(row["category"]), "pair": key}))
    return samples


TASK = register_task(Task(
    name=NAME, role="upstream", metric="mme", loader=load, max_new_tokens=4,
    description=f"MME ({REPO}, test carved 80/20 by image pair); MME acc and acc+",
))
