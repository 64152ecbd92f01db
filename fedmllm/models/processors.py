"""Torchvision-free multimodal processors.

transformers builds video processors with torchvision, which this project does not install, so
``AutoProcessor.from_pretrained`` fails for every processor class that has a ``video_processor``
(LLaVA-OneVision, Qwen2-VL, ...). `without_video` derives a subclass that drops that argument
(every sample here has exactly one image, never a video); `load_processor` assembles a processor
from its PIL image processor (``AutoImageProcessor`` picks it when torchvision is absent), its
tokenizer and its saved settings. The subclass keeps the base class's name and its full init
signature minus ``video_processor``, so ``save_pretrained`` writes every setting and the saved
folder stays loadable by stock transformers where torchvision exists.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, ProcessorMixin
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

from fedmllm.errors import UserError


@functools.cache
def without_video(base: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``base`` itself if it takes no ``video_processor``; else a subclass that passes ``None``."""
    sig = inspect.signature(base.__init__)
    if "video_processor" not in sig.parameters:
        return base

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["video_processor"] = None
        bound = sig.bind(self, *args, **kwargs)
        base.__init__(*bound.args, **bound.kwargs)

    # ProcessorMixin finds its sub-processors and the settings to save from this signature.
    __init__.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in sig.parameters.items() if name != "video_processor"]
    )
    return type(base.__name__, (base,), {"__init__": __init__, "__doc__": base.__doc__,
                                         "__module__": __name__, "__qualname__": base.__name__})


def processor_settings(cls: type[ProcessorMixin]) -> list[str]:
    """Init keyword arguments of ``cls`` other than its sub-processors and ``chat_template``."""
    names = inspect.signature(cls.__init__).parameters
    skip = set(cls.get_attributes()) | {"self", "chat_template", "video_processor"}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [n for n, p in names.items() if n not in skip and p.kind in kinds]


def _processor_class_name(path: str, processor_dict: dict[str, Any]) -> str:
    name = processor_dict.get("processor_class")
    if name:
        return name
    model_type = AutoConfig.from_pretrained(path).model_type
    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if not name:
        raise UserError(f"checkpoint {path!r} (model type {model_type!r}) has no multimodal processor class")
    return name


def load_processor(path: str) -> ProcessorMixin:
    """Build the multimodal processor saved at ``path`` (a local folder or a cached hub id)."""
    # Reads processor_config.json and the chat template in every layout (.jinja, legacy .json).
    processor_dict, _ = ProcessorMixin.get_processor_dict(path)
    name = _processor_class_name(path, processor_dict)
    base = getattr(transformers, name, None)
    if base is None:
        raise UserError(f"checkpoint {path!r} needs processor class {name!r}, which transformers "
                        f"{transformers.__version__} does not have (remote code is not supported)")
    cls = without_video(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    parts: dict[str, Any] = {"tokenizer": tokenizer}
    for attr in cls.get_attributes():
        if attr == "image_processor":
            parts[attr] = AutoImageProcessor.from_pretrained(path)
        elif attr != "tokenizer":
            raise UserError(f"processor {base.__name__} needs a {attr!r}, which fedmllm does not load")
    settings = {k: processor_dict[k] for k in processor_settings(cls) if k in processor_dict}
    chat_template = processor_dict.get("chat_template") or getattr(tokenizer, "chat_template", None)
    return cls(**parts, **settings, chat_template=chat_template)
