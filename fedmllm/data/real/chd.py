"""CHD (downstream): the paper's private medical dataset, read from a folder the user supplies.

Two layouts are accepted (the first that matches wins):

1. Parquet: ``<root>/data/{train,test}-*.parquet`` (any layout ``datasets.load_dataset(root)``
   reads) with columns ``image`` and ``answer`` (the diagnosis), optional ``question`` (else the
   fixed question below) and optional ``id`` (else the row index is the stable id).
2. ImageFolder: ``<root>/{train,test}/<diagnosis>/<image>`` (png, jpg, jpeg, bmp, tif, tiff,
   gif, webp); the answer is the ``<diagnosis>`` folder name, verbatim. Without ``train``/``test``
   folders, ``<root>/<diagnosis>/<image>`` is carved 80/20 by sha1 of ``<diagnosis>/<file>``
   (`common.in_train`).

The question is the loader option ``question=...`` if given, else the parquet's ``question``
column if present, else ``"What is the diagnosis shown in this image?"``. Scored by exact match;
``meta["label"]`` is the diagnosis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task
from fedmllm.errors import UserError

NAME = "chd"
QUESTION = "What is the diagnosis shown in this image?"
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
EXPECTED = ("data/{train,test}-*.parquet (columns image, answer[, question, id]) or "
            "{train,test}/<diagnosis>/<image files>")


def _images_by_class(folder: Path) -> list[tuple[str, Path]]:
    """(diagnosis, file) for every image file in ``folder/<diagnosis>/``, sorted."""
    return sorted((d.name, f) for d in folder.iterdir() if d.is_dir()
                  for f in d.iterdir() if f.suffix.lower() in SUFFIXES)


def _from_folders(root: Path, split: str) -> list[tuple[str, str, Path]]:
    """(stable id, diagnosis, file) of ``split`` in the ImageFolder layout."""
    if (root / "train").is_dir() or (root / "test").is_dir():
        if not (root / split).is_dir():
            raise UserError(f"{NAME}: folder {str(root)!r} has no {split}/ subfolder: add "
                            f"{split}/<diagnosis>/<images> next to the other split")
        return [(f"{d}/{f.name}", d, f) for d, f in _images_by_class(root / split)]
    items = [(f"{d}/{f.name}", d, f) for d, f in _images_by_class(root)]
    return [items[i] for i in c.carve(NAME, [sid for sid, _, _ in items], split)]


def _from_parquet(root: Path, split: str, n: Optional[int], seed: int, question: Optional[str],
                  options: dict) -> list[Sample]:
    """Samples of ``split`` in the parquet layout."""
    table = c.load_table(NAME, str(root), split, **options)
    c.require_columns(NAME, str(root), table, ("image", "answer"))
    ids = [str(x) for x in table["id"]] if "id" in table.column_names else None
    picked = c.subsample(range(len(table)), n, seed)
    samples = []
    for i, row in zip(picked, c.rows(table, picked)):
        sid = ids[i] if ids else i
        answer = str(row["answer"]).strip()
        samples.append(Sample(uid=c.make_uid(NAME, split, sid), task=NAME,
                              images=[c.to_rgb(row["image"], NAME, f"{root} row {i}")],
                              question=question or str(row.get("question") or QUESTION),
                              answers=[answer],
                              meta={"label": answer}))
    return samples


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, question: Optional[str] = None,
         **options: Any) -> list[Sample]:
    """Load CHD ``split`` from the user's folder ``source`` (layouts in the module docstring)."""
    c.check_options(NAME, options, c.HUB_OPTIONS)
    if not source:
        raise UserError(f"{NAME}: CHD is private: pass the folder that holds it as source "
                        f"({EXPECTED})")
    root = c.local_folder(NAME, source, EXPECTED)
    if any(root.rglob("*.parquet")):
        return _from_parquet(root, split, n, seed, question, options)
    if not any(f.suffix.lower() in SUFFIXES for f in root.rglob("*")):
        raise UserError(f"{NAME}: folder {str(root)!r} has none of the expected files: {EXPECTED}")
    items = _from_folders(root, split)
    samples = []
    for i in c.subsample(range(len(items)), n, seed):
        sid, diagnosis, path = items[i]
        samples.append(Sample(uid=c.make_uid(NAME, split, sid), task=NAME,
                              images=[c.to_rgb(str(path), NAME, f"file {str(path)!r}")],
                              question=question or QUESTION, answers=[diagnosis],
                              meta={"label": diagnosis}))
    return samples


TASK = register_task(Task(
    name=NAME, role="downstream", metric="exact_match", loader=load,
    prompt=c.short_answer_prompt, max_new_tokens=16,
    description="CHD (private medical dataset; local parquet or ImageFolder folder); exact match",
))
