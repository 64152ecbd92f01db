"""Shared helpers of the real-dataset loaders.

Source resolution (hub id or local folder, configurable lmms-lab org), `datasets.load_dataset`
with errors a user can act on, the deterministic train/test carving, seeded subsampling and
image decoding into exactly one RGB PIL image per sample.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, TypeVar

import numpy as np
from PIL import Image

from fedmllm.data.record import Sample
from fedmllm.errors import UserError

LMMS_ORG = "lmms-lab"
ORG_ENV = "FEDMLLM_HUB_ORG"
# Percent of a carved split's stable ids that go to "train"; the rest is "test".
TRAIN_PERCENT = 80
HUB_OPTIONS = ("cache_dir", "revision")
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
SHORT_ANSWER = "Answer the question using a single word or phrase."
T = TypeVar("T")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def hub_org(org: Optional[str] = None) -> str:
    """The hub org of the lmms-lab datasets: ``org``, else ``$FEDMLLM_HUB_ORG``, else lmms-lab."""
    return org or os.environ.get(ORG_ENV) or LMMS_ORG


def resolve_source(source: Optional[str], default: str, org: Optional[str] = None) -> str:
    """``source`` if given, else ``default`` with an ``lmms-lab/`` owner replaced by `hub_org`."""
    if source:
        return str(source)
    owner, _, name = default.partition("/")
    return f"{hub_org(org)}/{name}" if owner == LMMS_ORG else default


def is_local(source: str) -> bool:
    """True for an existing path or anything that is not shaped like a hub id ``owner/name``."""
    return Path(source).expanduser().exists() or not _HUB_ID.fullmatch(source)


def local_folder(task: str, source: str, expected: str) -> Path:
    """The folder ``source``; a missing one raises a `UserError` saying what it should hold."""
    root = Path(source).expanduser()
    if not root.is_dir():
        raise UserError(f"{task}: folder {str(root)!r} does not exist: pass the folder that "
                        f"holds {expected}")
    return root


def check_options(task: str, options: dict, allowed: Iterable[str]) -> None:
    """Reject loader options this task does not know (a typo would otherwise be ignored)."""
    allowed = sorted(set(allowed))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"{task}: unknown loader option(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(allowed) or 'none'}")


def declares_configs(folder: str) -> bool:
    """True if ``folder`` has a README.md whose YAML header (dataset card) declares ``configs``,
    as hub repos with several configs do; such a folder is loaded config by config."""
    readme = Path(folder).expanduser() / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return False
    header = text[3:].split("\n---", 1)[0]
    try:
        import yaml

        meta = yaml.safe_load(header)
    except Exception:  # an unparsable card: datasets would not find its configs either
        return False
    return isinstance(meta, dict) and bool(meta.get("configs"))


def load_table(task: str, source: str, split: str, config: Optional[str] = None,
               data_files: Optional[Sequence[Path]] = None, **hub_options: Any):
    """``datasets.load_dataset(source, config, split=split)`` with every failure a `UserError`.

    Works the same for a hub id and for a local folder (``data/{split}-*.parquet`` or a folder
    with a README declaring configs, as hub repos do). With ``data_files`` (parquet paths) those
    files are read as ``split`` instead, ``source`` only naming them in errors.
    """
    import datasets

    no_files = (f"{task}: folder {source!r} has none of the expected files: put the dataset's "
                f"parquet files there as data/{split}-*.parquet")
    if data_files is not None:
        if not data_files:
            raise UserError(no_files)
        source_args: tuple = ("parquet",)
        hub_options = {"data_files": {split: [str(f) for f in data_files]}, **hub_options}
        hub_options.pop("revision", None)  # local files have no revision
    else:
        source_args = (source, config)
        # datasets would read any text file as a "text" dataset: a local folder must hold parquet.
        if is_local(source) and not any(
                local_folder(task, source, "parquet files").rglob("*.parquet")):
            raise UserError(no_files)
    try:
        return datasets.load_dataset(*source_args, split=split, **hub_options)
    except datasets.data_files.EmptyDatasetError:
        raise UserError(no_files) from None
    except datasets.exceptions.DatasetNotFoundError as e:
        raise UserError(f"{task}: dataset {source!r} was not found on the Hub ({e}): check the "
                        f"id (lmms-lab datasets: hub_org= or ${ORG_ENV}) or pass a local "
                        "folder") from None
    except ConnectionError:
        raise UserError(f"{task}: dataset {source!r} could not be found locally (not a folder, "
                        "not in the Hugging Face cache) and the Hub was not reached: set "
                        "HF_HUB_OFFLINE=0 and HF_DATASETS_OFFLINE=0 on a machine with internet "
                        "access, or pass a local folder as source") from None
    except (ValueError, OSError) as e:  # unknown split or config, unreadable parquet
        where = f"{source!r} (split {split!r}{f', config {config!r}' if config else ''})"
        raise UserError(f"{task}: could not load {where}: {e}") from None


def require_columns(task: str, source: str, table: Any, columns: Sequence[str]) -> None:
    """Raise a `UserError` naming the missing columns and the columns found."""
    found = list(table.column_names)
    missing = [c for c in columns if c not in found]
    if missing:
        raise UserError(f"{task}: {source!r} lacks required column(s) {', '.join(missing)} "
                        f"(columns found: {', '.join(found)}): pass the dataset in its "
                        "original schema")


def in_train(stable_id: Any) -> bool:
    """Carving rule: sha1 of the stable id, first 8 hex digits as an int, mod 100 < 80 → train."""
    digest = hashlib.sha1(str(stable_id).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100 < TRAIN_PERCENT


def carve(task: str, ids: Sequence[Any], split: str, enabled: bool = True) -> list[int]:
    """Positions of ``ids`` on ``split``'s side of the 80/20 carving.

    With ``enabled=False`` (loader option ``carve=False``) "test" is the whole source split (to
    compare with published numbers) and "train" is refused.
    """
    if not enabled:
        if split == "train":
            raise UserError(f"{task}: the source has no train split and carve=False: "
                            "use carve=True for a deterministic 80/20 train/test carving")
        return list(range(len(ids)))
    want = split == "train"
    return [i for i, sid in enumerate(ids) if in_train(sid) == want]


def check_n(n: Optional[int]) -> None:
    """``n`` is None (all) or a non-negative int."""
    if n is not None and (not isinstance(n, int) or n < 0):
        raise UserError(f"n must be a non-negative integer or None (all), got {n!r}")


def subsample(indices: Iterable[T], n: Optional[int], seed: int) -> list[T]:
    """All ``indices`` in source order (n=None), or the first ``n`` of a seeded permutation.

    An ``n`` above the number available returns them all (shuffled).
    """
    check_n(n)
    indices = list(indices)
    if n is None:
        return indices
    perm = np.random.default_rng(seed).permutation(len(indices))
    return [indices[int(i)] for i in perm[:n]]


def rows(table: Any, indices: Sequence[int], image_columns: Sequence[str] = ("image",)):
    """The rows at ``indices``, image columns left undecoded (decoded by `to_rgb`, per row)."""
    import datasets

    for col in image_columns:
        if isinstance(table.features.get(col), datasets.Image):
            table = table.cast_column(col, datasets.Image(decode=False))
    return table.select(list(indices))


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with transparent pixels composited on white (diagram PNGs would turn black)."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def to_rgb(value: Any, task: str, where: str) -> Image.Image:
    """Decode one image (PIL, datasets ``{"bytes", "path"}``, bytes or a path) into RGB.

    An unreadable image raises a `UserError` naming ``where`` (file or row).
    """
    try:
        if isinstance(value, Image.Image):
            value.load()
            return flatten(value)
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            value = io.BytesIO(value)
        elif not isinstance(value, (str, Path)):
            raise ValueError(f"no image (got {type(value).__name__})")
        with Image.open(value) as image:
            image.load()
            return flatten(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"{task}: corrupt or missing image at {where} ({e}): re-download the "
                        "dataset or remove that item") from None


def blank_image(size: int = 224) -> Image.Image:
    """A white RGB image, for items that come without one (one image per sample, always)."""
    return Image.new("RGB", (size, size), "white")


def make_uid(task: str, split: str, source_id: Any) -> str:
    """``"<task>/<split>/<stable source id>"``."""
    return f"{task}/{split}/{source_id}"


def majority(answers: Sequence[str]) -> str:
    """Most frequent answer, ties to the earliest (the class label of a 10-answer VQA item)."""
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a))) if answers else ""


def short_answer_prompt(sample: Sample) -> str:
    """Open VQA prompt (LLaVA / lmms-eval convention): the question, then a one-phrase request."""
    return f"{sample.question}\n{SHORT_ANSWER}"


def open_table(task: str, source: Optional[str], repo: str, org: Optional[str], split: str,
               columns: Sequence[str], options: dict) -> tuple[str, Any]:
    """The common prologue of a hub/parquet loader: check options, resolve the source (hub id
    with the configured org, or a local folder), load ``split`` and require ``columns``.
    Returns (resolved source, table)."""
    check_options(task, options, HUB_OPTIONS)
    src = resolve_source(source, repo, org)
    table = load_table(task, src, split, **options)
    require_columns(task, src, table, columns)
    return src, table


def caption_loader(name: str, repo: str, source_split: str, id_column: str, captions_column: str):
    """The loader of a carved captioning set (Flickr30k, COCO-Caption): one image, the caption
    instruction as question, the reference captions as answers, ``meta["label"] = "caption"``."""
    carve_ids = carve  # inside `load` the loader's `carve` flag shadows the function

    def load(split: str, n: Optional[int] = None, seed: int = 0, source: Optional[str] = None,
             hub_org: Optional[str] = None, carve: bool = True, **options: Any) -> list[Sample]:
        src, table = open_table(name, source, repo, hub_org, source_split,
                                ("image", captions_column, id_column), options)
        ids = [str(x) for x in table[id_column]]
        picked = subsample(carve_ids(name, ids, split, carve), n, seed)
        samples = []
        for i, row in zip(picked, rows(table, picked)):
            image = to_rgb(row["image"], name, f"{src} image {ids[i]}")
            samples.append(Sample(uid=make_uid(name, split, ids[i]), task=name, images=[image],
                                  question=CAPTION_PROMPT,
                                  answers=[str(x).strip() for x in row[captions_column]],
                                  meta={"label": "caption"}))
        return samples

    load.__doc__ = f"Load the carved {name} ``split`` as normalized samples (see the module docstring)."
    return load
