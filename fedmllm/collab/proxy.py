"""Proxy-tuning: steer the large model at decoding time with a small tuned / base pair.

Liu et al. 2024, "Tuning Language Models by Proxy" (Eq. 1): at each step the large model's logits
are shifted by the small tuned model's logits minus the small untuned (base) model's,
``s = s_large + alpha * (s_tuned - s_base)``, and the next token is taken from ``s``. The large
model is never trained; only the small expert's delta travels. Our large and small models have
different vocabularies, so the delta reaches a large id only through an exact string match
(`fedmllm.collab.align.exact_map`; other ids get no delta), and each small model reads the text
generated so far re-tokenized in its own vocabulary.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from transformers import PreTrainedModel, ProcessorMixin

from fedmllm.collab.align import exact_map
from fedmllm.data.collate import encode_generate, to_model
from fedmllm.data.record import Sample
from fedmllm.eval.generate import _generation_ids, left_padded_positions


def proxy_logits(large: torch.Tensor, tuned: torch.Tensor, base: torch.Tensor,
                 vocab: Optional[Any] = None, alpha: float = 1.0) -> torch.Tensor:
    """``large + alpha * (tuned - base)``, the delta carried to the large vocabulary by ``vocab``.

    Args:
        large: (..., V_L) large-model logits.
        tuned, base: (..., V_S) small tuned / base logits.
        vocab: int array of length V_L: for each large id the small id whose delta it gets, ``-1``
            for none (delta 0), e.g. ``exact_map(large_tok, small_tok)``. Needed when V_L != V_S.
        alpha: strength of the delta.
    """
    if tuned.shape != base.shape:
        raise ValueError(f"proxy_logits: tuned {tuple(tuned.shape)} and base {tuple(base.shape)} differ")
    if large.shape[:-1] != tuned.shape[:-1]:
        raise ValueError(f"proxy_logits: large {tuple(large.shape)} and small {tuple(tuned.shape)} "
                         "logits must share their leading dims")
    delta = (tuned - base).to(large.dtype)
    if vocab is None:
        if large.shape[-1] != delta.shape[-1]:
            raise ValueError(f"proxy_logits: vocabularies differ ({large.shape[-1]} vs {delta.shape[-1]}); "
                             "pass vocab=exact_map(large_tok, small_tok)")
        return large + alpha * delta
    index = torch.as_tensor(np.asarray(vocab), dtype=torch.long, device=large.device)
    if index.shape != (large.shape[-1],):
        raise ValueError(f"proxy_logits: vocab must have one entry per large id ({large.shape[-1]}), "
                         f"got shape {tuple(index.shape)}")
    if int(index.max()) >= delta.shape[-1] or int(index.min()) < -1:
        raise ValueError(f"proxy_logits: vocab entries must be -1 or small ids below {delta.shape[-1]}")
    gathered = delta[..., index.clamp(min=0)]
    return large + alpha * torch.where(index >= 0, gathered, torch.zeros_like(gathered))


def proxy_generate(large_model: PreTrainedModel, large_processor: ProcessorMixin,
                   tuned_model: PreTrainedModel, base_model: PreTrainedModel,
                   small_processor: ProcessorMixin, samples: list[Sample], max_new_tokens: int = 32,
                   batch_size: int = 16, alpha: float = 1.0) -> list[str]:
    """Greedy proxy-tuned answers of the large model to ``samples``, in order.

    Each step runs a full forward (no KV cache: sequences are short) of the large model on its
    left-padded prompt plus the large tokens so far, and of both small models on their own prompt
    plus that text re-tokenized by the small tokenizer (no special tokens); each model gets the
    pixel inputs of its own processor. The last positions' logits are combined by `proxy_logits`
    and the argmax appended; a row stops at the large tokenizer's EOS. Answers are decoded with
    special tokens skipped and stripped, as `fedmllm.eval.generate.generate`'s.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    models = (large_model, tuned_model, base_model)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    vocab = exact_map(large_processor.tokenizer, small_processor.tokenizer)
    out: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(samples), batch_size):
                chunk = samples[start: start + batch_size]
                out.extend(_generate_batch(large_model, large_processor, tuned_model, base_model,
                                           small_processor, chunk, vocab, max_new_tokens, alpha))
    finally:
        for m, mode in zip(models, was_training):
            m.train(mode)
    return out


def _generate_batch(large_model, large_processor, tuned_model, base_model, small_processor,
                    samples: list[Sample], vocab: np.ndarray, max_new_tokens: int,
                    alpha: float) -> list[str]:
    large_tok, small_tok = large_processor.tokenizer, small_processor.tokenizer
    ids = _generation_ids(large_model, large_processor)
    eos = set(ids["eos_token_id"] if isinstance(ids["eos_token_id"], list) else [ids["eos_token_id"]])
    large_batch = encode_generate(large_processor, samples)
    small_batch = encode_generate(small_processor, samples)
    small_prompts = _unpad_left(small_batch)
    small_pad = small_tok.pad_token_id if small_tok.pad_token_id is not None else 0  # masked anyway
    new = torch.empty(len(samples), 0, dtype=torch.long)
    done = torch.zeros(len(samples), dtype=torch.bool)
    for _ in range(max_new_tokens):
        large_last = _last_logits(large_model, _extended(large_batch, new))
        texts = large_tok.batch_decode(new, skip_special_tokens=True)
        cont = small_tok(texts, add_special_tokens=False)["input_ids"]
        small_step = _repadded(small_batch, [p + c for p, c in zip(small_prompts, cont)], small_pad)
        tuned_last = _last_logits(tuned_model, small_step)
        base_last = _last_logits(base_model, small_step)
        full = np.full(large_last.shape[-1], -1, dtype=np.int64)  # lm head may exceed the tokenizer
        full[: min(len(vocab), len(full))] = vocab[: len(full)]
        logits = proxy_logits(large_last, tuned_last.to(large_last.device), base_last.to(large_last.device),
                              vocab=full, alpha=alpha)
        step = logits.argmax(-1).cpu()
        step = torch.where(done, torch.full_like(step, ids["pad_token_id"]), step)
        new = torch.cat([new, step[:, None]], dim=1)
        done |= torch.tensor([int(t) in eos for t in step])
        if bool(done.all()):
            break
    return [t.strip() for t in large_tok.batch_decode(new, skip_special_tokens=True)]


def _last_logits(model: PreTrainedModel, batch: dict[str, Any]) -> torch.Tensor:
    """Last-position logits (B, V) of ``model`` on a left-padded ``batch``; position ids from the
    attention mask as ``generate`` makes them, so padding does not shift the positions."""
    inputs = to_model({**batch, "position_ids": left_padded_positions(batch["attention_mask"])}, model)
    return model(**inputs, use_cache=False).logits[:, -1].float()


def _extended(batch: dict[str, Any], new: torch.Tensor) -> dict[str, Any]:
    """``batch`` with ``new`` tokens appended after its (left-padded) prompts."""
    ones = torch.ones_like(new, dtype=batch["attention_mask"].dtype)
    return {**batch, "input_ids": torch.cat([batch["input_ids"], new], dim=1),
            "attention_mask": torch.cat([batch["attention_mask"], ones], dim=1)}


def _unpad_left(batch: dict[str, Any]) -> list[list[int]]:
    """Each row's prompt ids (image tokens already expanded by the processor) without padding."""
    return [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"])]


def _repadded(batch: dict[str, Any], rows: list[list[int]], pad_id: int) -> dict[str, Any]:
    """``batch`` with ``rows`` as its input ids, left-padded again (pixel inputs unchanged)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=batch["attention_mask"].dtype)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return {**batch, "input_ids": input_ids, "attention_mask": mask}
