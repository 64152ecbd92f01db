"""Shared pieces of the embedded tiny models: sizes, tokenizer corpus, seeded initialisation.

Sizes were chosen by a size probe: SigLIP 64-dim x 2 layers at 64 px with 16 px patches; Qwen2
128-dim x 4 layers (with 2-3 LLM layers yes/no questions stayed at chance).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast, Qwen2Config, SiglipVisionConfig

from fedmllm.models.tokenizer import train_tokenizer

IMAGE_SIZE = 64
PATCH_SIZE = 16
# SigLIP's image normalisation (mean = std = 0.5), as in the real SigLIP checkpoints.
IMAGE_MEAN = IMAGE_STD = [0.5, 0.5, 0.5]


def vision_config() -> SiglipVisionConfig:
    """SigLIP: 64-dim, 2 layers, 4 heads, 64 px images in 16 px patches (4 x 4 = 16 patches).
    ``vision_use_head=False`` as in LLaVA-OneVision (no attention-pooling head)."""
    return SiglipVisionConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False,
    )


def text_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    """Qwen2: 128-dim, 4 layers, 4 query / 2 key-value heads (grouped-query attention as Qwen2)."""
    return Qwen2Config(
        hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
        tie_word_embeddings=False, **special_ids(tokenizer),
    )


def special_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """pad / eos / bos ids for configs and generation (Qwen2 chat models have no BOS)."""
    return {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None}


@functools.cache
def _corpus() -> tuple[str, ...]:
    # Imported here: the task suite is only needed when a fresh tokenizer is trained.
    from fedmllm.data.synth import suite_texts

    return tuple(suite_texts(n_per_task=64, seed=0))


def suite_tokenizer(kind: str = "word", vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """A fresh tokenizer trained on the offline task suite's prompts and answers: word-level (the
    small bases) or WordPiece of ``vocab_size`` entries (the large base)."""
    return train_tokenizer(list(_corpus()), kind=kind, vocab_size=vocab_size)


def seeded_init(model_cls: type[PreTrainedModel], config: Any, seed: int,
                tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """``model_cls(config)`` initialised from ``seed`` without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    for key, value in special_ids(tokenizer).items():
        setattr(model.generation_config, key, value)
    model.eval()
    return model
