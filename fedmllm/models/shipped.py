"""Where the shipped checkpoints' weights are, wherever this copy of the package runs from.

``flwr run .`` builds a Flower app bundle (FAB) of the project and imports ``fedmllm`` from it.
A FAB carries only text files (``*.py``, ``*.toml``, ``*.md``, ``*.json``, ...; Flower's include
list cannot be widened), so its copy of ``fedmllm/assets/checkpoints/<name>/`` has
``config.json`` and the tokenizer but no ``model.safetensors``. The weights are then read from
the fedmllm distribution installed in the environment that runs the app (its source tree for an
editable install), found through the package metadata, not through the working directory.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse
from urllib.request import url2pathname

WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
BUNDLE_NOTE = ("Flower's app bundle (flwr run) carries only text files, not the weights: install fedmllm "
               "(pip install -e .) in the environment that runs the app")


def has_weights(folder: Path) -> bool:
    """Whether a checkpoint folder holds its weights (one file or a sharded index)."""
    return any((folder / w).is_file() for w in WEIGHTS)


def installed_checkpoints() -> Optional[Path]:
    """``fedmllm/assets/checkpoints`` of the installed fedmllm distribution (None: not installed)."""
    try:
        dist = distribution("fedmllm")
    except PackageNotFoundError:
        return None
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    url = str(direct.get("url", ""))
    if direct.get("dir_info", {}).get("editable") and url.startswith("file:"):
        root = Path(url2pathname(urlparse(url).path))  # editable: the source tree
    else:
        root = Path(str(dist.locate_file("")))  # a regular install: site-packages
    return root / "fedmllm" / "assets" / "checkpoints"


def shipped_folder(local: Path) -> Path:
    """``local`` (this package copy's checkpoint folder), or the installed distribution's folder of
    the same name where ``local`` is a copy without weights (a FAB) and the installed one has them."""
    if (local / "config.json").is_file() and not has_weights(local):
        root = installed_checkpoints()
        if root is not None and has_weights(root / local.name):
            return root / local.name
    return local
