"""Batched greedy decoding with the KV cache."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, ProcessorMixin

from fedmllm.data.collate import chat_prompt, encode_generate, to_model
from fedmllm.data.record import Sample


def _generation_ids(model: PreTrainedModel, processor: ProcessorMixin) -> dict[str, Any]:
    """pad / eos ids: the model's generation config first, else the tokenizer's."""
    tok = processor.tokenizer
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    eos = eos if eos is not None else tok.eos_token_id
    pad = getattr(gen, "pad_token_id", None)
    if pad is None:
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    return {"eos_token_id": eos, "pad_token_id": pad}


def generate(model: PreTrainedModel, processor: ProcessorMixin, samples: list[Sample], *,
             batch_size: int = 32, max_new_tokens: int = 16) -> list[str]:
    """Greedy answers to ``samples``, in order: only the new tokens, special tokens skipped.

    Left-padded batches of ``batch_size`` go through ``model.generate`` (KV cache, no sampling)
    under ``torch.inference_mode`` in eval mode; the model's train/eval mode is restored after.
    Samples are batched in order of prompt length (less padding, similar answer lengths per
    batch); the answers come back in the order of ``samples``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    ids = _generation_ids(model, processor)
    prompts = [chat_prompt(processor, s) for s in samples]  # rendered once, reused by every batch
    order = _by_prompt_length(processor, prompts) if batch_size > 1 else list(range(len(samples)))
    out: list[str] = [""] * len(samples)
    try:
        with torch.inference_mode():
            for start in range(0, len(samples), batch_size):
                idx = order[start: start + batch_size]
                batch = encode_generate(processor, [samples[i] for i in idx], [prompts[i] for i in idx])
                batch = to_model(batch, model)
                generated = model.generate(
                    **batch, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                    use_cache=True, temperature=None, top_p=None, top_k=None, **ids,
                )
                new = generated[:, batch["input_ids"].shape[1]:]
                texts = processor.tokenizer.batch_decode(new, skip_special_tokens=True)
                for i, text in zip(idx, texts):
                    out[i] = text.strip()
    finally:
        model.train(was_training)
    return out


def _by_prompt_length(processor: ProcessorMixin, prompts: list[str]) -> list[int]:
    """Prompt indices sorted by prompt length in tokens (stable: ties keep their order)."""
    lengths = [len(ids) for ids in processor.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    return sorted(range(len(prompts)), key=lengths.__getitem__)
