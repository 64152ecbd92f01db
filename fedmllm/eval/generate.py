"""Batched greedy decoding with the KV cache."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, ProcessorMixin

from fedmllm.data.collate import encode_generate
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
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    ids = _generation_ids(model, processor)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out: list[str] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(samples), batch_size):
                batch = encode_generate(processor, samples[start: start + batch_size])
                batch = {k: _to(v, device, dtype) for k, v in batch.items()}
                generated = model.generate(
                    **batch, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                    use_cache=True, temperature=None, top_p=None, top_k=None, **ids,
                )
                new = generated[:, batch["input_ids"].shape[1]:]
                texts = processor.tokenizer.batch_decode(new, skip_special_tokens=True)
                out.extend(t.strip() for t in texts)
    finally:
        model.train(was_training)
    return out


def _to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    # Pixel values follow the model's dtype; ids, masks and sizes stay integer.
    if not isinstance(value, torch.Tensor):
        return value
    if value.is_floating_point():
        return value.to(device=device, dtype=dtype)
    return value.to(device)
