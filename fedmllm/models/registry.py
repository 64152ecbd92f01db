"""Building models by name: the embedded tiny models, hub ids and local checkpoint folders.

``build_model("tiny-llava-ov")`` loads the shipped checkpoint; ``pretrained=False`` gives a seeded
random init with a freshly trained tokenizer. Any other name is a hub id or a local folder of an
image-text-to-text checkpoint (``save_pretrained`` layout), loaded with
``AutoModelForImageTextToText`` and a torchvision-free processor.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin

from fedmllm.errors import UserError
from fedmllm.models.base import MODELS, ModelBundle, ModelSpec, register_model
from fedmllm.models.fast_images import with_fast_images
from fedmllm.models.groups import groups_for
from fedmllm.models.processors import load_processor
from fedmllm.models.shipped import BUNDLE_NOTE, has_weights, shipped_folder

# Importing an entry module registers that model (one file, one registration).
from fedmllm.models import tiny_llava_ov, tiny_llava_ov_large, tiny_vila  # noqa: E402,F401,I001

__all__ = ["MODELS", "ModelBundle", "ModelSpec", "register_model", "build_model", "save_bundle",
           "checkpoint_dir", "DTYPES"]

CHECKPOINTS = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as fedmllm.data.real.common


def checkpoint_dir(name: str) -> Path:
    """Where the shipped checkpoint of registered model ``name`` lives (or will be written); for a
    copy of the package without the weights (Flower's app bundle), the installed distribution's
    (`fedmllm.models.shipped`)."""
    MODELS.get(name)
    return shipped_folder(CHECKPOINTS / name)


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
    # Same pixel values as transformers' PIL image processors, faster on batches (fast_images).
    return ModelBundle(model=model, processor=with_fast_images(processor), name=name_or_path,
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
    if not has_weights(path):
        raise UserError(f"model {name!r}: the shipped checkpoint at {path} has no weights (model.safetensors); "
                        f"{BUNDLE_NOTE}, or run `fedmllm pretrain` to re-create them")
    return _load_checkpoint(str(path), True, torch_dtype, 0)


def _load_checkpoint(path: str, pretrained: bool, torch_dtype: Optional[torch.dtype],
                     seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Model + processor from a local folder or a hub id (offline: the local hub cache only)."""
    if Path(path).expanduser().is_dir():
        return _load_folder(str(Path(path).expanduser()), pretrained, torch_dtype, seed)
    if Path(path).expanduser().exists():
        raise UserError(f"model {path!r} is a file; give a checkpoint folder (save_pretrained layout), a "
                        f"registered model ({', '.join(MODELS.names())}) or a hub id 'owner/name'")
    if not _HUB_ID.fullmatch(path):  # fail fast: no hub round trips for a typo
        raise UserError(f"{MODELS.unknown_message(path)}; or give an existing checkpoint folder or a hub "
                        "id 'owner/name'")
    _check_hub_reachable(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:  # not cached offline, unknown repo, or not a repo id
        raise UserError(
            f"checkpoint {path!r} not found locally: it is not a registered model "
            f"({', '.join(MODELS.names())}), not a folder, and not in the Hugging Face cache. "
            "Download it with internet access (set HF_HUB_OFFLINE=0), or pass a local folder "
            f"saved with save_pretrained ({type(err).__name__})"
        ) from None
    return _build(path, config, pretrained, torch_dtype, seed), load_processor(path)


def _build(path: str, config, pretrained: bool, torch_dtype: Optional[torch.dtype], seed: int,
           strict: bool = False) -> PreTrainedModel:
    """The model; ``strict``: weights missing from the checkpoint or of another shape are an error
    (transformers would initialise them randomly)."""
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
    if pretrained:
        if strict:
            model, info = AutoModelForImageTextToText.from_pretrained(
                path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
            shapes = [f"{k} ({tuple(a)} in the file, {tuple(b)} in config.json)"
                      for k, a, b in sorted(info["mismatched_keys"])]
            for what, keys in (("lacks weights", sorted(info["missing_keys"])), ("has mis-shaped weights", shapes)):
                if keys:
                    raise UserError(f"checkpoint {path}: its weights file {what} {', '.join(keys[:3])}"
                                    f"{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}; it does not "
                                    "match its config.json (damaged or mixed files)")
        else:
            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        check_finite(model, path)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(config, **kwargs)
    model.eval()
    return model


def _load_folder(path: str, pretrained: bool, torch_dtype: Optional[torch.dtype],
                 seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A checkpoint folder; every damaged or missing file is a `UserError` naming it."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise UserError(f"folder {path!r} has no config.json: not a checkpoint saved with save_pretrained")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, ...
        raise UserError(f"checkpoint {path}: config.json is corrupt or of an unsupported model type "
                        f"({_first_line(err)})") from None
    try:
        model = _build(path, config, pretrained, torch_dtype, seed, strict=True)
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
        weights = ", ".join(p.name for p in sorted(folder.glob("*.safetensors"))) or "no *.safetensors file"
        raise UserError(f"checkpoint {path}: its weights ({weights}) cannot be loaded: {_first_line(err)}; "
                        "the file is damaged or incomplete: re-save or re-download it") from None
    try:
        processor = load_processor(path)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - tokenizers / transformers raise many types
        missing = [f for f in ("tokenizer.json", "tokenizer_config.json", "processor_config.json")
                   if not (folder / f).is_file()]
        if missing:
            raise UserError(f"checkpoint {path}: cannot build its processor: {', '.join(missing)} missing; save "
                            "the processor beside the model (fedmllm.models.save_bundle does both)") from None
        raise UserError(f"checkpoint {path}: cannot build its processor (a corrupt tokenizer or processor "
                        f"file): {_first_line(err)}") from None
    return model, processor


def check_finite(model: torch.nn.Module, where: str) -> None:
    """Refuse a model whose weights hold NaN or Inf (a diverged or damaged checkpoint)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"checkpoint {where}: weight {name} holds NaN or Inf values (a diverged or "
                            "damaged checkpoint); retrain or re-download it")


def _check_hub_reachable(repo: str) -> None:
    """Fail in seconds, not after a minute of retries, when a hub id can neither come from the
    local cache nor from the Hub (offline, or no network)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return  # offline: the cache only (the caller's error says so); cached: no network needed
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # behind a proxy a direct connection says nothing
    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    try:
        socket.create_connection((host, url.port or (80 if url.scheme == "http" else 443)), timeout=5).close()
    except OSError as err:
        raise UserError(f"model {repo!r} is not in the local Hugging Face cache and {host} cannot be "
                        f"reached ({err.strerror or err}); download it on a machine with network access, "
                        "or pass a local checkpoint folder") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
