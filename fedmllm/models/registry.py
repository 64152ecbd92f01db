"""Building models by name: the embedded tiny models, hub ids and local checkpoint folders.

``build_model("tiny-llava-ov")`` loads the shipped checkpoint; ``pretrained=False`` gives a seeded
random init with a freshly trained tokenizer. Any other name is a hub id or a local folder of an
image-text-to-text checkpoint (``save_pretrained`` layout), loaded with
``AutoModelForImageTextToText`` and a torchvision-free processor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin

from fedmllm.errors import UserError
from fedmllm.models.base import MODELS, ModelBundle, ModelSpec, register_model
from fedmllm.models.groups import groups_for
from fedmllm.models.processors import load_processor

# Importing an entry module registers that model (one file, one registration).
from fedmllm.models import tiny_llava_ov, tiny_vila  # noqa: E402,F401,I001

__all__ = ["MODELS", "ModelBundle", "ModelSpec", "register_model", "build_model", "save_bundle",
           "checkpoint_dir", "DTYPES"]

CHECKPOINTS = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def checkpoint_dir(name: str) -> Path:
    """Where the shipped checkpoint of registered model ``name`` lives (or will be written)."""
    MODELS.get(name)
    return CHECKPOINTS / name


def build_model(name_or_path: str, *, pretrained: bool = True, dtype: Optional[str] = None,
                device: Optional[str] = None, seed: int = 0) -> ModelBundle:
    """Build a model and its processor.

    Args:
        name_or_path: a registered name (``tiny-llava-ov``, ``tiny-vila``), a local checkpoint
            folder, or a Hugging Face hub id of an image-text-to-text model.
        pretrained: load trained weights; ``False`` gives a random init seeded by ``seed`` (for a
            registered name, also with a freshly trained tokenizer).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``; ``None`` keeps the checkpoint's.
        device: e.g. ``"cpu"`` or ``"cuda"``; ``None`` leaves the model on CPU.
        seed: seed of the random init when ``pretrained=False``.
    """
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype] if dtype else None
    if name_or_path in MODELS:
        spec = MODELS.get(name_or_path)
        if pretrained:
            model, processor = _load_shipped(spec.name, torch_dtype)
        else:
            model, processor = spec.fresh(seed)
    else:
        model, processor = _load_checkpoint(name_or_path, pretrained, torch_dtype, seed)
    if torch_dtype is not None or device is not None:
        model.to(device=device, dtype=torch_dtype)
    return ModelBundle(model=model, processor=processor, name=name_or_path,
                       model_type=model.config.model_type, groups=groups_for(model))


def save_bundle(bundle: ModelBundle, directory: str | Path) -> Path:
    """Save model, processor, tokenizer and chat template in ``save_pretrained`` layout;
    ``build_model(directory)`` loads it back. (For a peft-wrapped model this saves the adapter.)"""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(directory)
    bundle.processor.save_pretrained(directory)
    return directory


def _load_shipped(name: str, torch_dtype: Optional[torch.dtype]) -> tuple[PreTrainedModel, ProcessorMixin]:
    path = checkpoint_dir(name)
    if not (path / "config.json").is_file():
        raise UserError(
            f"model {name!r} has no shipped checkpoint at {path}; run `fedmllm pretrain` to train "
            "and write it (or build a random init with pretrained=False)"
        )
    return _load_checkpoint(str(path), True, torch_dtype, 0)


def _load_checkpoint(path: str, pretrained: bool, torch_dtype: Optional[torch.dtype],
                     seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Model + processor from a local folder or a hub id (offline: the local hub cache only)."""
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise UserError(f"folder {path!r} has no config.json: not a checkpoint saved with save_pretrained")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:  # not cached offline, unknown repo, or not a repo id
        raise UserError(
            f"checkpoint {path!r} not found locally: it is not a registered model "
            f"({', '.join(MODELS.names())}), not a folder, and not in the Hugging Face cache. "
            "Download it with internet access (set HF_HUB_OFFLINE=0), or pass a local folder "
            f"saved with save_pretrained ({type(err).__name__})"
        ) from None
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
    if pretrained:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(config, **kwargs)
    model.eval()
    return model, load_processor(path)
