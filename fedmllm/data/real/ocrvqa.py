"""OCR-VQA (upstream): questions about book covers, scored by exact match.

Source: ``howard-hou/OCR-VQA`` (splits train/validation/test; one row per cover image with
columns ``image_id``, ``image``, ``questions`` (list), ``answers`` (list, aligned), ``title``,
``genre``, ``ocr_tokens``, ...). Rows are exploded: one sample per (image, question), stable id
``<image_id>-<k>`` for the k-th question of the row; ``n`` counts questions.
Paper train → ``train``, paper test → ``test``. ``meta["genre"]`` keeps the book genre.
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task

NAME = "ocrvqa"
REPO = "howard-hou/OCR-VQA"
SOURCE_SPLITS = {"train": "train", "test": "test"}
COLUMNS = ("image_id", "image", "questions", "answers")


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, **options: Any) -> list[Sample]:
    """Load OCR-VQA ``split``, one sample per question (see the module docstring)."""
    src, table = c.open_table(NAME, source, REPO, hub_org, SOURCE_SPLITS[split], COLUMNS, options)
    # (row, k) for every question, from the text columns only (no image is decoded here).
    entries = [(r, k) for r, qs in enumerate(table["questions"]) for k in range(len(qs or []))]
    picked = c.subsample(range(len(entries)), n, seed)
    row_ids = sorted({entries[i][0] for i in picked})
    by_row = {}
    for r, row in zip(row_ids, c.rows(table, row_ids)):
        image = c.to_rgb(row["image"], NAME, f"{src} image {row['image_id']}")
        by_row[r] = (row, image)
    samples = []
    for i in picked:
        r, k = entries[i]
        row, image = by_row[r]
        answer = str(row["answers"][k]).strip()
        meta = {"label": answer}
        if row.get("genre"):
            meta["genre"] = str(row["genre"])
        samples.append(Sample(uid=c.make_uid(NAME, split, f"{row['image_id']}-{k}"), task=NAME,
                              images=[image], question=str(row["questions"][k]),
                              answers=[answer], meta=meta))
    return samples


TASK = register_task(Task(
    name=NAME, role="upstream", metric="exact_match", loader=load,
    prompt=c.short_answer_prompt, max_new_tokens=32,
    description=f"OCR-VQA ({REPO}, rows exploded to questions); exact match",
))
