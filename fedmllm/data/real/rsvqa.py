"""RSVQA-LR (downstream): remote-sensing questions, scored by exact match.

Source: a local folder with the official low-resolution JSON release (Zenodo record 6344334):
``LR_split_{train,val,test}_questions.json`` (``{"questions": [{"id", "img_id", "type",
"question", "answers_ids", "active"}, ...]}``), ``LR_split_*_answers.json`` (``{"answers":
[{"id", "question_id", "answer", "active"}, ...]}``), optional ``LR_split_*_images.json``
(``{"images": [{"id", "active", ...}]}``: inactive images are skipped) and the images
``Images_LR/{img_id}.tif``. There is no hub repo, so ``source`` is required.
Paper train → ``train``, paper test → ``test`` (``val`` is unused). Inactive questions are
skipped. Stable id: the question ``id``. ``meta["qtype"]`` is ``type`` (presence, comp, count,
rural_urban); count answers are kept as the raw numbers of the release.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from fedmllm.data.real import common as c
from fedmllm.data.record import Sample, Task
from fedmllm.data.registry import register_task
from fedmllm.errors import UserError

NAME = "rsvqa"
PREFIX = "LR_split_"
IMAGE_DIR = "Images_LR"
EXPECTED = f"{PREFIX}{{train,val,test}}_{{questions,answers,images}}.json and {IMAGE_DIR}/*.tif"


def _read(task: str, path: Path, key: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{task}: cannot read {str(path)!r} ({e!r}): expected the official RSVQA "
                        f"JSON with a top-level {key!r} list") from None


def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
         hub_org: Optional[str] = None, **options: Any) -> list[Sample]:
    """Load RSVQA-LR ``split`` from the official JSON release in ``source``."""
    c.check_options(NAME, options, ())
    if not source:
        raise UserError(f"{NAME}: no source given: pass the folder of the RSVQA-LR release "
                        f"({EXPECTED})")
    root = c.local_folder(NAME, source, EXPECTED)
    questions_file, answers_file, images_file = (
        root / f"{PREFIX}{split}_{kind}.json" for kind in ("questions", "answers", "images"))
    if not (questions_file.is_file() and answers_file.is_file()):
        raise UserError(f"{NAME}: folder {str(root)!r} has none of the expected files "
                        f"{questions_file.name} and {answers_file.name}: pass the folder of the "
                        f"RSVQA-LR release ({EXPECTED})")
    answers = {a["id"]: a for a in _read(NAME, answers_file, "answers")}
    inactive = set()
    if images_file.is_file():
        inactive = {im["id"] for im in _read(NAME, images_file, "images")
                    if not im.get("active", True)}
    questions = [q for q in _read(NAME, questions_file, "questions")
                 if q.get("active", True) and "question" in q and q.get("img_id") not in inactive]
    samples = []
    for i in c.subsample(range(len(questions)), n, seed):
        q = questions[i]
        ids = q.get("answers_ids") or []
        if not ids or ids[0] not in answers:
            raise UserError(f"{NAME}: question {q['id']} in {questions_file.name} has no answer in "
                            f"{answers_file.name}: use the matching files of one release")
        answer = str(answers[ids[0]]["answer"]).strip()
        image_path = root / IMAGE_DIR / f"{q['img_id']}.tif"
        image = c.to_rgb(str(image_path), NAME, f"file {str(image_path)!r}")
        samples.append(Sample(uid=c.make_uid(NAME, split, q["id"]), task=NAME, images=[image],
                              question=str(q["question"]), answers=[answer],
                              meta={"label": answer, "qtype": str(q.get("type", "")),
                                    "img_id": q["img_id"]}))
    return samples


TASK = register_task(Task(
    name=NAME, role="downstream", metric="exact_match", loader=load,
    prompt=c.short_answer_prompt, max_new_tokens=8,
    description="RSVQA-LR (official JSON release, local folder); exact match",
))
