"""Writers of tiny fixtures in the real schemas of the paper's twelve datasets.

Each ``write_<task>(root)`` writes a folder that the real loader reads like the hub repo (parquet
``data/{split}-00000-of-00001.parquet`` with datasets' Image feature, GQA's two configs declared
in a README, RSVQA's JSON release with .tif images, CHD's ImageFolder) and returns it. Every image
is 8×8 and filled with `color(k)` of a known ``k``, so a test can check which image a sample got.
Nothing binary is committed: tests write these into a tmp dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset, Image as ImageFeature
from PIL import Image


def color(k: int) -> tuple[int, int, int]:
    """A distinct RGB colour per small integer ``k``."""
    return ((40 * k) % 256, (90 * k + 30) % 256, (150 * k + 60) % 256)


def image(k: int, mode: str = "RGB") -> Image.Image:
    """An 8×8 image filled with `color(k)` (in ``mode``: the loaders must convert to RGB)."""
    rgb = Image.new("RGB", (8, 8), color(k))
    # An adaptive palette keeps the one colour exact (the default web palette would not).
    return rgb.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)


def pixel(sample: Any) -> tuple[int, int, int]:
    """The top-left pixel of a sample's only image."""
    (img,) = sample.images
    return img.getpixel((0, 0))


def write_parquet(root: Path, split: str, columns: dict[str, list],
                  images: tuple[str, ...] = ("image",), subdir: str = "data") -> Path:
    """Write ``columns`` as ``root/subdir/{split}-00000-of-00001.parquet``; the ``images``
    columns get datasets' Image feature (as hub parquet files have)."""
    table = Dataset.from_dict(columns)
    for col in images:
        table = table.cast_column(col, ImageFeature())
    path = root / subdir / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(path))
    return root


CORRUPT = {"bytes": b"this is not an image", "path": "broken.png"}


def write_scienceqa(root: Path) -> Path:
    """derek-thomas/ScienceQA: train (4 rows, row 1 without image) and test (3 rows)."""
    for split, ks in (("train", [0, 1, 2, 3]), ("test", [4, 5, 6])):
        write_parquet(root, split, {
            "image": [None if k == 1 else image(k, "RGBA" if k == 2 else "RGB") for k in ks],
            "question": [f"sqa question {k}?" for k in ks],
            "choices": [[f"c{k}a", f"c{k}b", f"c{k}c"][: 2 + k % 2] for k in ks],
            "answer": [k % 2 for k in ks],
            "hint": ["" if k % 2 else f"hint {k}" for k in ks],
            "task": ["closed choice"] * len(ks),
            "grade": ["grade5"] * len(ks),
            "subject": ["natural science"] * len(ks),
            "topic": ["physics"] * len(ks),
            "category": ["Velocity"] * len(ks),
            "skill": ["Compare"] * len(ks),
            "lecture": ["lecture"] * len(ks),
            "solution": ["solution"] * len(ks),
        })
    return root


ICONQA_IDS = ["3", "4", "5", "6", "7", "8"]  # sha1 carving: 3-6 train, 7-8 test


def write_iconqa(root: Path) -> Path:
    """lmms-lab/ICON-QA: split val, 6 questions; "5" is choose_img (skipped by the loader)."""
    types = ["choose_txt", "fill_in_blank", "choose_img", "choose_txt", "choose_txt",
             "fill_in_blank"]
    return write_parquet(root, "val", {
        "question_id": ICONQA_IDS,
        "question": [f"icon question {q}?" for q in ICONQA_IDS],
        "choices": ["red,green, blue" if t == "choose_txt" else None for t in types],
        "answer": ["green" if t == "choose_txt" else "4" for t in types],
        "ques_type": types,
        "grade": ["prek"] * 6,
        "label": ["shape"] * 6,
        "query_image": [image(int(q), "P") for q in ICONQA_IDS],
        "choice_image_0": [image(9) if t == "choose_img" else None for t in types],
        "choice_image_1": [image(10) if t == "choose_img" else None for t in types],
        "skills": ["counting"] * 6,
    }, images=("query_image", "choice_image_0", "choice_image_1"))


def write_pathvqa(root: Path) -> Path:
    """flaviagiammarino/path-vqa: train (3 rows) and test (3 rows)."""
    for split, ks in (("train", [0, 1, 2]), ("test", [3, 4, 5])):
        write_parquet(root, split, {
            "image": [image(k, "L" if k == 3 else "RGB") for k in ks],
            "question": [f"path question {k}?" for k in ks],
            "answer": ["yes" if k % 2 else f"tissue {k}" for k in ks],
        })
    return root


FLICKR_IDS = ["3", "4", "5", "6", "7", "8"]  # 3-6 train, 7-8 test


def write_flickr30k(root: Path) -> Path:
    """lmms-lab/flickr30k: one test split, 6 images with 5 captions each."""
    return write_parquet(root, "test", {
        "image": [image(int(i)) for i in FLICKR_IDS],
        "caption": [[f"caption {j} of image {i}" for j in range(5)] for i in FLICKR_IDS],
        "sentids": [[str(10 * int(i) + j) for j in range(5)] for i in FLICKR_IDS],
        "img_id": FLICKR_IDS,
        "filename": [f"{i}.jpg" for i in FLICKR_IDS],
    })


OKVQA_IDS = ["3", "4", "5", "6", "7", "8"]  # 3-6 train, 7-8 test


def ten_answers(k: int) -> list[str]:
    """Ten annotator answers, 6 of them ``"answer k"`` (the majority), 4 ``"other"``."""
    return [f"answer {k}"] * 3 + ["other"] * 4 + [f"answer {k}"] * 3


def write_okvqa(root: Path) -> Path:
    """lmms-lab/OK-VQA: one val2014 split, 6 questions with 10 answers each."""
    return write_parquet(root, "val2014", {
        "question_id": OKVQA_IDS,
        "question": [f"ok question {q}?" for q in OKVQA_IDS],
        "answers": [ten_answers(q) for q in OKVQA_IDS],
        "image": [image(int(q)) for q in OKVQA_IDS],
        "question_type": ["eight"] * 6,
        "answer_type": ["other"] * 6,
    })


GQA_README = """---
configs:
{configs}
---
# GQA (fixture)
"""


def write_gqa(root: Path) -> Path:
    """lmms-lab/GQA: {train,testdev}_balanced_{instructions,images} configs declared in README.

    testdev: 5 questions on images "img1" (k=1) and "img2" (k=2) plus an unused image "img3";
    train: 3 questions on "img4" (k=4)."""
    parts = {"testdev": ([("q1", "img1"), ("q2", "img2"), ("q3", "img1"), ("q4", "img2"),
                          ("q5", "img1")], ["img1", "img2", "img3"]),
             "train": ([("t1", "img4"), ("t2", "img4"), ("t3", "img4")], ["img4"])}
    configs = []
    for split, (questions, images) in parts.items():
        for kind in ("instructions", "images"):
            name = f"{split}_balanced_{kind}"
            configs.append(f"- config_name: {name}\n  data_files:\n  - split: {split}\n"
                           f"    path: {name}/{split}-*")
        write_parquet(root, split, {
            "id": [q for q, _ in questions],
            "imageId": [i for _, i in questions],
            "question": [f"gqa {q} about {i}?" for q, i in questions],
            "answer": [f"ans {q}" for q, _ in questions],
            "fullAnswer": [f"The answer is ans {q}." for q, _ in questions],
            "isBalanced": [True] * len(questions),
            "types": [{"structural": "query", "semantic": "attr", "detailed": "color"}
                      for _ in questions],
        }, images=(), subdir=f"{split}_balanced_instructions")
        write_parquet(root, split, {"id": images, "image": [image(int(i[-1])) for i in images]},
                      subdir=f"{split}_balanced_images")
    (root / "README.md").write_text(GQA_README.format(configs="\n".join(configs)))
    return root


def write_textvqa(root: Path) -> Path:
    """lmms-lab/textvqa: train (3 rows) and validation (4 rows), 10 answers each."""
    for split, ks in (("train", [0, 1, 2]), ("validation", [3, 4, 5, 6])):
        write_parquet(root, split, {
            "image_id": [f"im{k}" for k in ks],
            "question_id": [100 + k for k in ks],
            "question": [f"what does sign {k} say?" for k in ks],
            "question_tokens": [["what", "does"] for _ in ks],
            "image": [image(k) for k in ks],
            "image_width": [8] * len(ks),
            "image_height": [8] * len(ks),
            "answers": [ten_answers(k) for k in ks],
            "ocr_tokens": [["stop"] for _ in ks],
            "set_name": [split] * len(ks),
        })
    return root


def write_ocrvqa(root: Path) -> Path:
    """howard-hou/OCR-VQA: train (1 cover, 2 questions), test (2 covers with 3 + 2 questions)."""
    covers = {"train": [("b9", 9, 2)], "test": [("b1", 1, 3), ("b2", 2, 2)]}
    for split, rows in covers.items():
        write_parquet(root, split, {
            "image_id": [b for b, _, _ in rows],
            "image": [image(k) for _, k, _ in rows],
            "questions": [[f"{b} question {j}?" for j in range(m)] for b, _, m in rows],
            "answers": [[f"{b} answer {j}" for j in range(m)] for b, _, m in rows],
            "ocr_tokens": [["title"] for _ in rows],
            "title": [f"Title {b}" for b, _, _ in rows],
            "authorName": ["Author"] * len(rows),
            "genre": ["Travel"] * len(rows),
            "image_width": [8] * len(rows),
            "image_height": [8] * len(rows),
            "set_name": [split] * len(rows),
        })
    return root


COCO_IDS = [f"COCO_val2014_{k:012d}.jpg" for k in range(1, 6)]  # 1 test, 2-5 train


def write_coco_caption(root: Path) -> Path:
    """lmms-lab/COCO-Caption: one val split, 5 images with 5 captions each."""
    return write_parquet(root, "val", {
        "question_id": COCO_IDS,
        "image": [image(k) for k in range(1, 6)],
        "question": ["Please carefully observe the image and come up with a caption."] * 5,
        "answer": [[f"coco caption {j} of {k}" for j in range(5)] for k in range(1, 6)],
        "id": list(range(1, 6)),
        "license": [1] * 5,
        "file_name": COCO_IDS,
        "coco_url": ["http://images.cocodataset.org/x.jpg"] * 5,
        "height": [8] * 5,
        "width": [8] * 5,
        "date_captured": ["2013-11-14"] * 5,
    })


MME_KEYS = [f"existence/{k}.jpg" for k in (1, 2, 3, 4)]  # 1, 3 train; 2, 4 test


def write_mme(root: Path) -> Path:
    """lmms-lab/MME: one test split, 4 images × 2 questions (Yes then No), pairs adjacent."""
    keys = [key for key in MME_KEYS for _ in range(2)]
    return write_parquet(root, "test", {
        "question_id": keys,
        "image": [image(int(key.split("/")[1][0])) for key in keys],
        "question": [f"Is there {j} in {key}? Please answer yes or no."
                     for key in MME_KEYS for j in ("a dog", "a cat")],
        "answer": ["Yes", "No"] * len(MME_KEYS),
        "category": ["existence"] * len(keys),
    })


def write_rsvqa(root: Path) -> Path:
    """RSVQA-LR release: train and test JSON triplets and Images_LR/{id}.tif.

    train: image 0 (questions 0, 1, 2; question 2 inactive); test: image 1 (question 10) and
    image 2 (question 11, but image 2 is inactive in the images file)."""
    (root / "Images_LR").mkdir(parents=True, exist_ok=True)
    for k in (0, 1, 2):
        image(k).save(root / "Images_LR" / f"{k}.tif")
    plan = {"train": [(0, 0, "presence", "Is a road present?", "yes", True),
                      (1, 0, "count", "How many buildings are there?", "12", True),
                      (2, 0, "rural_urban", "Is it a rural or an urban area?", "rural", False)],
            "test": [(10, 1, "comp", "Is the number of roads equal to the number of buildings?",
                      "no", True),
                     (11, 2, "presence", "Is there water?", "yes", True)]}
    for split, qs in plan.items():
        questions = [{"id": q, "date_added": 1.5e9, "img_id": im, "people_id": 0, "type": t,
                      "question": text, "answers_ids": [100 + q], "active": active}
                     for q, im, t, text, _, active in qs]
        answers = [{"id": 100 + q, "date_added": 1.5e9, "question_id": q, "people_id": 0,
                    "answer": a, "active": True} for q, _, _, _, a, _ in qs]
        image_ids = sorted({im for _, im, *_ in qs})
        images = [{"id": im, "date_added": 1.5e9, "people_id": 0, "active": im != 2,
                   "questions_ids": [q for q, i, *_ in qs if i == im]} for im in image_ids]
        for kind, key, items in (("questions", "questions", questions),
                                 ("answers", "answers", answers), ("images", "images", images)):
            (root / f"LR_split_{split}_{kind}.json").write_text(json.dumps({key: items}))
    return root


CHD_FILES = {"train": {"normal": [1, 2], "asd": [3]}, "test": {"normal": [4], "vsd": [5]}}


def write_chd(root: Path, split_folders: bool = True) -> Path:
    """CHD ImageFolder layout: ``{split}/{diagnosis}/{k}.png`` (or ``{diagnosis}/{k}.png``)."""
    for split, classes in CHD_FILES.items():
        for diagnosis, ks in classes.items():
            folder = root / split / diagnosis if split_folders else root / diagnosis
            folder.mkdir(parents=True, exist_ok=True)
            for k in ks:
                image(k).save(folder / f"{k}.png")
    return root


def write_chd_parquet(root: Path) -> Path:
    """CHD parquet layout: ``data/{split}-*.parquet`` with image, question, answer, id."""
    for split, ks in (("train", [1, 2, 3]), ("test", [4, 5])):
        write_parquet(root, split, {
            "id": [f"patient{k}" for k in ks],
            "image": [image(k) for k in ks],
            "question": [f"Which defect does echo {k} show?" for k in ks],
            "answer": ["asd" if k % 2 else "normal" for k in ks],
        })
    return root
