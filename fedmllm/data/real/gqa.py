"""GQA (upstream): compositional scene questions, scored by exact match.

Source: ``lmms-lab/GQA``, whose questions and images are separate configs joined on the image
id: ``<part>_instructions`` (columns ``id``, ``imageId``, ``question``, ``answer``,
``fullAnswer``, ``types`` {structural, semantic, detailed}, ...) and ``<part>_images`` (``id``,
``image``); the split of config ``<part>`` is the word before its first ``_`` (``testdev``).
Paper train → ``train_balanced``, paper test → ``testdev_balanced`` (lmms-eval's ``gqa``);
the loader option ``config=`` picks another part (e.g. ``val_balanced``). Stable id: the question
``id``. ``meta["qtype"]`` is ``types["structural"]`` (verify, query, choose, logical, compare).

A local folder is read like the hub repo when its README.md declares the configs; without such a
dataset card it must hold the hub layout's subfolders ``<part>_instructions/`` and
``<part>_images/`` (the parquet files inside, e.g. ``testdev-00000-of-00001.parquet``), which are
read directly and joined on ``imageId`` the same way.
"""

from __future__ import annotations

from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task
from fedmllm.errors import UserError

NAME = "gqa"
REPO = "lmms-lab/GQA"
SOURCE_CONFIGS = {"train": "train_balanced", "test": "testdev_balanced"}
COLUMNS = ("id", "imageId", "question", "answer")


def _load_config(src: str, source_split: str, config: str, options: dict):
    """One config of the release: by name from the hub or a folder whose README declares it,
    else from the folder's ``<config>/`` subfolder of parquet files."""
    if not c.is_local(src) or c.declares_configs(src):
        return c.load_table(NAME, src, source_split, config, **options)
    folder = c.local_folder(NAME, src, f"the GQA subfolders {config}/ (parquet files)")
    sub = folder / config
    files = sorted(sub.rglob("*.parquet")) if sub.is_dir() else []
    if not files:
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise UserError(f"{NAME}: folder {src!r} has no README.md declaring configs and no "
                        f"parquet files under {config}/ (subfolders found: "
                        f"{', '.join(found) or 'none'}): put the release's {config}/ parquet "
                        "files there, or a README.md with its dataset card")
    return c.load_table(NAME, str(sub), source_split, data_files=files, **options)


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, config: Optional[str] = None,
         **options: Any) -> list[Sample]:
    """Load GQA ``split`` (questions joined with their images) as normalized samples."""
    c.check_options(NAME, options, c.HUB_OPTIONS)
    src = c.resolve_source(source, REPO, hub_org)
    part = config or SOURCE_CONFIGS[split]
    source_split = part.split("_")[0]
    questions = _load_config(src, source_split, f"{part}_instructions", options)
    c.require_columns(NAME, src, questions, COLUMNS)
    images = _load_config(src, source_split, f"{part}_images", options)
    c.require_columns(NAME, src, images, ("id", "image"))
    image_row = {str(x): j for j, x in enumerate(images["id"])}
    picked = c.subsample(range(len(questions)), n, seed)
    chosen = list(c.rows(questions, picked))
    wanted = sorted({str(q["imageId"]) for q in chosen} - set(image_row))
    if wanted:
        raise UserError(f"{NAME}: {src!r} config {part}_images lacks image(s) "
                        f"{', '.join(wanted[:5])} used by {part}_instructions: pass both configs "
                        "of one GQA release")
    needed = sorted({image_row[str(q["imageId"])] for q in chosen})
    decoded = {}
    for row in c.rows(images, needed):
        decoded[str(row["id"])] = c.to_rgb(row["image"], NAME, f"{src} image {row['id']}")
    samples = []
    for q in chosen:
        answer = str(q["answer"]).strip()
        meta = {"label": answer, "image_id": str(q["imageId"])}
        if isinstance(q.get("types"), dict) and q["types"].get("structural"):
            meta["qtype"] = str(q["types"]["structural"])
        samples.append(Sample(uid=c.make_uid(NAME, split, q["id"]), task=NAME,
                              images=[decoded[str(q["imageId"])]], question=str(q["question"]),
                              answers=[answer], meta=meta))
    return samples


TASK = register_task(Task(
    name=NAME, role="upstream", metric="exact_match", loader=load,
    prompt=c.short_answer_prompt, max_new_tokens=8,
    description=f"GQA ({REPO}, testdev_balanced as test); exact match",
))
