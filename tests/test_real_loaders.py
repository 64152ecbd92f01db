"""The real loaders of the twelve paper datasets, on tiny fixtures written in the real schemas.

No network: tests/conftest.py sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE; datasets' cache goes to
a tmp dir. Expected train/test carvings are recomputed here from the documented rule.
"""

from __future__ import annotations

import hashlib
import json

import datasets
import pytest
from PIL import Image

import fedmllm.data.real  # noqa: F401  (registers the tasks)
import fixtures_real as fx
from fedmllm.data.real import common
from fedmllm.data.registry import TASKS
from fedmllm.errors import UserError

EXPECTED_TASKS = {
    "scienceqa": ("downstream", "option_letter"), "iconqa": ("downstream", "exact_match"),
    "rsvqa": ("downstream", "exact_match"), "pathvqa": ("downstream", "exact_match"),
    "flickr30k": ("downstream", "cider_d"), "chd": ("downstream", "exact_match"),
    "okvqa": ("upstream", "vqa_accuracy"), "gqa": ("upstream", "exact_match"),
    "textvqa": ("upstream", "vqa_accuracy"), "ocrvqa": ("upstream", "exact_match"),
    "coco-caption": ("upstream", "cider_d"), "mme": ("upstream", "mme"),
}


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory, monkeypatch):
    """Keep datasets' arrow cache out of the user's home."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))


def load(task, split="test", **kw):
    return TASKS.get(task).load(split=split, **kw)


def train_by_rule(stable_id) -> bool:
    """The documented carving rule, recomputed independently of the loaders."""
    return int(hashlib.sha1(str(stable_id).encode()).hexdigest()[:8], 16) % 100 < 80


def ids(samples):
    return [s.uid.split("/", 2)[2] for s in samples]


def check_common(samples, task, split):
    """The project-wide record contract: one RGB image, uid shape, task name, answers present."""
    for s in samples:
        assert s.task == task and s.uid.startswith(f"{task}/{split}/")
        assert len(s.images) == 1 and isinstance(s.images[0], Image.Image)
        assert s.images[0].mode == "RGB"
        assert s.question and s.answers
        json.dumps(s.meta)
    assert len({s.uid for s in samples}) == len(samples)


def check_carving(task, root, all_ids, carve_key=lambda i: i, **kw):
    train = load(task, "train", source=str(root), **kw)
    test = load(task, "test", source=str(root), **kw)
    check_common(train, task, "train")
    check_common(test, task, "test")
    assert ids(train) == [i for i in all_ids if train_by_rule(carve_key(i))]
    assert ids(test) == [i for i in all_ids if not train_by_rule(carve_key(i))]
    assert train and test and not set(ids(train)) & set(ids(test))
    return train, test


def test_all_twelve_registered_with_role_and_metric():
    for name, (role, metric) in EXPECTED_TASKS.items():
        task = TASKS.get(name)
        assert (task.role, task.metric) == (role, metric), name


def test_scienceqa(tmp_path):
    root = fx.write_scienceqa(tmp_path)
    train = load("scienceqa", "train", source=str(root))
    check_common(train, "scienceqa", "train")
    assert ids(train) == ["0", "1", "2", "3"]
    assert [s.answers for s in train] == [["A"], ["B"], ["A"], ["B"]]
    assert [s.label for s in train] == ["A", "B", "A", "B"]
    assert train[0].choices == ["c0a", "c0b"] and train[1].choices == ["c1a", "c1b", "c1c"]
    assert train[1].meta["blank_image"] and train[1].images[0].getpixel((3, 3)) == (255, 255, 255)
    assert fx.pixel(train[2]) == fx.color(2)  # RGBA source converted to RGB
    assert train[0].question == "sqa question 0?"
    assert TASKS.get("scienceqa").prompt(train[0]).startswith("Context: hint 0\nsqa question 0?")
    test = load("scienceqa", "test", source=str(root))
    assert ids(test) == ["0", "1", "2"] and fx.pixel(test[0]) == fx.color(4)  # row indices


def test_iconqa_carves_val_and_skips_image_choices(tmp_path):
    root = fx.write_iconqa(tmp_path)
    kept = [q for q in fx.ICONQA_IDS if q != "5"]
    train, test = check_carving("iconqa", root, kept)
    by_id = {i: s for i, s in zip(ids(train + test), train + test)}
    assert by_id["3"].choices == ["red", "green", "blue"] and by_id["3"].answers == ["green"]
    assert by_id["4"].choices == [] and by_id["4"].answers == ["4"]
    assert by_id["4"].meta == {"label": "4", "qtype": "fill_in_blank"}
    assert fx.pixel(by_id["8"]) == fx.color(8)  # palette image converted to RGB
    assert "Options: red, green, blue." in TASKS.get("iconqa").prompt(by_id["3"])
    everything = load("iconqa", "test", source=str(root), carve=False)
    assert ids(everything) == kept
    with pytest.raises(UserError, match="carve=True"):
        load("iconqa", "train", source=str(root), carve=False)


def test_rsvqa_reads_the_json_release(tmp_path):
    root = fx.write_rsvqa(tmp_path)
    train = load("rsvqa", "train", source=str(root))
    check_common(train, "rsvqa", "train")
    assert ids(train) == ["0", "1"]  # question 2 is inactive
    assert [s.answers for s in train] == [["yes"], ["12"]]
    assert [s.meta["qtype"] for s in train] == ["presence", "count"]
    assert train[1].question == "How many buildings are there?"
    assert fx.pixel(train[0]) == fx.color(0)
    test = load("rsvqa", "test", source=str(root))
    assert ids(test) == ["10"] and fx.pixel(test[0]) == fx.color(1)  # image 2 is inactive
    with pytest.raises(UserError, match="no source given"):
        load("rsvqa", "train")


def test_pathvqa(tmp_path):
    root = fx.write_pathvqa(tmp_path)
    train = load("pathvqa", "train", source=str(root))
    test = load("pathvqa", "test", source=str(root))
    check_common(train, "pathvqa", "train")
    check_common(test, "pathvqa", "test")
    assert [s.answers[0] for s in train] == ["tissue 0", "yes", "tissue 2"]
    assert [s.meta["qtype"] for s in train] == ["open", "yes/no", "open"]
    assert test[0].images[0].mode == "RGB"  # grayscale source
    assert fx.pixel(train[2]) == fx.color(2)


def test_flickr30k_carving_and_captions(tmp_path):
    root = fx.write_flickr30k(tmp_path)
    train, test = check_carving("flickr30k", root, fx.FLICKR_IDS)
    assert len(train[0].answers) == 5
    assert train[0].answers[4] == f"caption 4 of image {ids(train)[0]}"
    assert train[0].question == common.CAPTION_PROMPT
    assert fx.pixel(test[0]) == fx.color(int(ids(test)[0]))
    again = load("flickr30k", "train", source=str(root))
    assert [s.uid for s in again] == [s.uid for s in train]


def test_okvqa_ten_answers(tmp_path):
    root = fx.write_okvqa(tmp_path)
    train, test = check_carving("okvqa", root, fx.OKVQA_IDS)
    s = test[0]
    assert len(s.answers) == 10 and s.label == f"answer {ids(test)[0]}"
    assert s.meta["qtype"] == "eight" and fx.pixel(s) == fx.color(int(ids(test)[0]))


def check_gqa_folder(root) -> None:
    """The fixture's GQA folder loads: instructions joined with their images, both splits."""
    test = load("gqa", "test", source=str(root))
    check_common(test, "gqa", "test")
    assert ids(test) == ["q1", "q2", "q3", "q4", "q5"]
    for s in test:
        k = int(s.meta["image_id"][-1])
        assert fx.pixel(s) == fx.color(k) and s.question.endswith(f"img{k}?")
    assert test[1].answers == ["ans q2"] and test[1].meta["qtype"] == "query"
    train = load("gqa", "train", source=str(root))
    assert ids(train) == ["t1", "t2", "t3"] and fx.pixel(train[0]) == fx.color(4)


def test_gqa_joins_instructions_and_images(tmp_path):
    root = fx.write_gqa(tmp_path)
    check_gqa_folder(root)
    assert len(load("gqa", "test", source=str(root), n=2, seed=3)) == 2


@pytest.mark.parametrize("card", [None, "# GQA\n\nA copy without a dataset card header.\n"])
def test_gqa_local_folder_without_configs_card(tmp_path, card):
    # The hub layout (<part>_instructions/, <part>_images/ of parquet files) copied without its
    # README.md, or with a README that declares no configs: the subfolders are read directly.
    root = fx.write_gqa(tmp_path)
    (root / "README.md").unlink()
    if card is not None:
        (root / "README.md").write_text(card)
    check_gqa_folder(root)
    # A part whose subfolders are missing names what it looked for.
    with pytest.raises(UserError, match="val_balanced_instructions/"):
        load("gqa", "test", source=str(root), config="val_balanced")


def test_textvqa_uses_validation_as_test(tmp_path):
    root = fx.write_textvqa(tmp_path)
    test = load("textvqa", "test", source=str(root))
    check_common(test, "textvqa", "test")
    assert ids(test) == ["103", "104", "105", "106"]
    assert len(test[0].answers) == 10 and test[0].label == "answer 3"
    assert ids(load("textvqa", "train", source=str(root))) == ["100", "101", "102"]


def test_ocrvqa_explodes_questions(tmp_path):
    root = fx.write_ocrvqa(tmp_path)
    test = load("ocrvqa", "test", source=str(root))
    check_common(test, "ocrvqa", "test")
    assert ids(test) == ["b1-0", "b1-1", "b1-2", "b2-0", "b2-1"]
    assert [(s.question, s.answers[0]) for s in test[3:]] == [
        ("b2 question 0?", "b2 answer 0"), ("b2 question 1?", "b2 answer 1")]
    assert fx.pixel(test[2]) == fx.color(1) and fx.pixel(test[4]) == fx.color(2)
    assert test[0].meta["genre"] == "Travel"
    two = load("ocrvqa", "test", source=str(root), n=2, seed=1)
    assert len(two) == 2 and set(ids(two)) <= set(ids(test))
    assert len(load("ocrvqa", "train", source=str(root))) == 2


def test_coco_caption(tmp_path):
    root = fx.write_coco_caption(tmp_path)
    train, test = check_carving("coco-caption", root, fx.COCO_IDS)
    assert ids(test) == ["COCO_val2014_000000000001.jpg"] and fx.pixel(test[0]) == fx.color(1)
    assert test[0].answers == [f"coco caption {j} of 1" for j in range(5)]


def test_mme_keeps_pairs_together(tmp_path):
    root = fx.write_mme(tmp_path)
    expected = [f"{key}/{k}" for key in fx.MME_KEYS for k in (0, 1)]
    train, test = check_carving("mme", root, expected, carve_key=lambda i: i.rsplit("/", 1)[0])
    assert {s.meta["pair"] for s in train} == {"existence/1.jpg", "existence/3.jpg"}
    assert [s.answers[0] for s in test] == ["Yes", "No", "Yes", "No"]
    assert test[0].meta == {"label": "Yes", "category": "existence", "qtype": "existence",
                            "pair": "existence/2.jpg"}
    three = load("mme", "train", source=str(root), n=3, seed=5)
    pairs = [s.meta["pair"] for s in three]
    assert len(three) == 3 and pairs[0] == pairs[1] != pairs[2]  # whole pairs first
    again = load("mme", "train", source=str(root), n=3, seed=5)
    assert [s.uid for s in again] == [s.uid for s in three]
    assert len(load("mme", "test", source=str(root), carve=False)) == 8


def test_chd_image_folder(tmp_path):
    root = fx.write_chd(tmp_path)
    train = load("chd", "train", source=str(root))
    check_common(train, "chd", "train")
    assert ids(train) == ["asd/3.png", "normal/1.png", "normal/2.png"]
    assert [s.answers[0] for s in train] == ["asd", "normal", "normal"]
    assert train[0].question == "What is the diagnosis shown in this image?"
    assert fx.pixel(train[0]) == fx.color(3)
    test = load("chd", "test", source=str(root), question="Which defect?")
    assert [s.label for s in test] == ["normal", "vsd"] and test[0].question == "Which defect?"


def test_chd_without_split_folders_is_carved(tmp_path):
    root = fx.write_chd(tmp_path, split_folders=False)
    every = [f"{d}/{k}.png" for d, k in sorted((d, k) for classes in fx.CHD_FILES.values()
                                               for d, ks in classes.items() for k in ks)]
    train = load("chd", "train", source=str(root))
    test = load("chd", "test", source=str(root))
    assert sorted(ids(train) + ids(test)) == sorted(every)
    assert ids(train) == [i for i in every if train_by_rule(i)]


def test_chd_parquet(tmp_path):
    root = fx.write_chd_parquet(tmp_path)
    test = load("chd", "test", source=str(root))
    check_common(test, "chd", "test")
    assert ids(test) == ["patient4", "patient5"]
    assert test[0].question == "Which defect does echo 4 show?" and test[1].answers == ["asd"]
    assert load("chd", "test", source=str(root), question="Q?")[0].question == "Q?"


def test_n_subsampling_is_seeded_and_deterministic(tmp_path):
    root = fx.write_textvqa(tmp_path)
    full = ids(load("textvqa", "test", source=str(root)))
    draws = {tuple(ids(load("textvqa", "test", source=str(root), n=2, seed=s))) for s in range(6)}
    assert all(len(d) == 2 and set(d) <= set(full) for d in draws) and len(draws) > 1
    a = ids(load("textvqa", "test", source=str(root), n=3, seed=7))
    assert a == ids(load("textvqa", "test", source=str(root), n=3, seed=7))
    assert sorted(ids(load("textvqa", "test", source=str(root), n=99, seed=7))) == sorted(full)
    with pytest.raises(UserError, match="non-negative"):
        load("textvqa", "test", source=str(root), n=-1)


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    out = common.to_rgb(rgba, "t", "here")
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (10, 20, 30)


def test_hub_org_is_configurable(monkeypatch):
    monkeypatch.delenv(common.ORG_ENV, raising=False)
    assert common.resolve_source(None, "lmms-lab/MME") == "lmms-lab/MME"
    assert common.resolve_source(None, "lmms-lab/MME", "lmms-lab-encoder") == "lmms-lab-encoder/MME"
    assert common.resolve_source(None, "howard-hou/OCR-VQA", "x") == "howard-hou/OCR-VQA"
    monkeypatch.setenv(common.ORG_ENV, "mirror")
    assert common.resolve_source(None, "lmms-lab/GQA") == "mirror/GQA"
    assert common.resolve_source("/data/gqa", "lmms-lab/GQA") == "/data/gqa"


# ---- errors a user can act on ----

def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.delenv(common.ORG_ENV, raising=False)
    with pytest.raises(UserError, match="no-such-org-fedmllm/MME' could not be found locally") as e:
        load("mme", hub_org="no-such-org-fedmllm")
    assert "HF_HUB_OFFLINE=0" in str(e.value) and "local folder" in str(e.value)


def test_missing_folder(tmp_path):
    for task in ("pathvqa", "rsvqa", "chd"):
        with pytest.raises(UserError, match="does not exist"):
            load(task, source=str(tmp_path / "nowhere"))


def test_folder_without_expected_files(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    for task in ("pathvqa", "rsvqa", "chd"):
        with pytest.raises(UserError, match="none of the expected files"):
            load(task, source=str(tmp_path))


def test_corrupt_image_names_the_row(tmp_path):
    fx.write_parquet(tmp_path, "test", {"image": [fx.image(0), fx.CORRUPT],
                                        "question": ["q0?", "q1?"], "answer": ["a", "b"]})
    with pytest.raises(UserError, match="corrupt or missing image at .* row 1"):
        load("pathvqa", source=str(tmp_path))
    assert len(load("pathvqa", source=str(tmp_path), n=0)) == 0


def test_corrupt_image_file_is_named(tmp_path):
    root = fx.write_rsvqa(tmp_path / "rsvqa")
    (root / "Images_LR" / "1.tif").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"corrupt or missing image at file .*1\.tif"):
        load("rsvqa", "test", source=str(root))
    chd = fx.write_chd(tmp_path / "chd")
    (chd / "test" / "vsd" / "5.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"5\.png"):
        load("chd", "test", source=str(chd))


def test_missing_column_names_it_and_the_columns_found(tmp_path):
    fx.write_parquet(tmp_path, "test", {"image": [fx.image(0)], "question": ["q?"]})
    found = r"lacks required column\(s\) answer \(columns found: image, question\)"
    with pytest.raises(UserError, match=found):
        load("pathvqa", source=str(tmp_path))


def test_missing_split_and_unknown_option(tmp_path):
    root = fx.write_flickr30k(tmp_path)
    with pytest.raises(UserError, match="Unknown split"):
        load("pathvqa", "train", source=str(root))  # the folder has only a test split
    with pytest.raises(UserError, match="unknown loader option"):
        load("flickr30k", source=str(root), cache_directory="x")

