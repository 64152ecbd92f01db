"""Batched greedy decoding with the KV cache.

Our own loop rather than ``model.generate``: the same greedy choice (argmax of the last
position's float32 logits, position ids from the left-padded attention mask as ``generate`` makes
them) but a row that has produced its end-of-sequence token leaves the batch, KV cache included,
so a batch's short answers do not pay for its longest one at every step; and none of
``generate``'s per-call set-up (its configuration checks, logits processors and stopping
criteria), which a one-by-one evaluation pays per sample.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import PreTrainedModel, ProcessorMixin

from fedmllm.data.collate import chat_prompts, encode_generate, to_model
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

    Left-padded batches of ``batch_size`` are decoded greedily (`greedy_batch`: KV cache, finished
    rows dropped; a peft prompt-tuning model: its soft prompt in front, `with_soft_prompt`) under
    ``torch.inference_mode`` in eval mode; the model's train/eval mode is restored after.
    Samples are batched in order of prompt length (less padding, similar answer lengths per
    batch); the answers come back in the order of ``samples``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    ids = _generation_ids(model, processor)
    prompts = chat_prompts(processor, samples)  # rendered once, reused by every batch
    order = _batch_order(processor, samples, prompts) if batch_size > 1 else list(range(len(samples)))
    out: list[str] = [""] * len(samples)
    kind = _peft_type(model)
    soft_prompt = kind == "PROMPT_TUNING"
    if not soft_prompt and getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        raise ValueError(f"generate: peft prompt-learning type {kind} is not supported (prompt tuning is)")
    decoder = model.base_model if soft_prompt else model
    try:
        with torch.inference_mode():
            for start in range(0, len(samples), batch_size):
                idx = order[start: start + batch_size]
                batch = encode_generate(processor, [samples[i] for i in idx], [prompts[i] for i in idx])
                batch = to_model(batch, model)
                if soft_prompt:
                    batch = with_soft_prompt(model, batch)
                new = greedy_batch(decoder, batch, max_new_tokens, **ids)
                texts = processor.tokenizer.batch_decode(new, skip_special_tokens=True)
                for i, text in zip(idx, texts):
                    out[i] = text.strip()
    finally:
        model.train(was_training)
    return out


def left_padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (pads: 1, never read)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


def _peft_type(model: PreTrainedModel) -> str | None:
    """The active peft method's type name ("LORA", "PROMPT_TUNING", ...), None for a plain model."""
    config = getattr(model, "active_peft_config", None)
    kind = getattr(config, "peft_type", None)
    return None if kind is None else str(getattr(kind, "value", kind))


def with_soft_prompt(model, batch: dict[str, Any]) -> dict[str, Any]:
    """A left-padded batch for the base of a peft prompt-tuning ``model``: token embeddings (image
    placeholders included: the base finds them in ``inputs_embeds``) after the soft prompt, the
    attention mask extended over it. peft's own forward does the same but drops position ids, so
    under left padding its positions (and answers) would shift with the padding; here
    `greedy_batch` derives them from the mask: the soft prompt at 0.., then the prompt after
    it, as in training and in an unpadded one-sample call."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    embeds = model.word_embeddings(ids)
    prompts = model.get_prompt(batch_size=ids.shape[0]).to(embeds.dtype)
    rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    return {**rest, "inputs_embeds": torch.cat([prompts, embeds], dim=1),
            "attention_mask": torch.cat([mask.new_ones(mask.shape[0], prompts.shape[1]), mask], dim=1)}


def _forward_names(model: PreTrainedModel) -> tuple[str, dict[str, int]]:
    """(the name ``model``'s forward takes its KV cache by: ``cache`` since transformers 5.2x,
    ``past_key_values`` before; ``{"logits_to_keep": 1}`` when it can run the LM head on the last
    position only, else {}), read from the forward of ``model`` (a peft wrapper: of its base)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return ("cache" if "cache" in params else "past_key_values",
            {"logits_to_keep": 1} if "logits_to_keep" in params else {})


def _cache_of(out) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def greedy_batch(model: PreTrainedModel, batch: dict[str, Any], max_new_tokens: int, *,
                 eos_token_id: int | list[int], pad_token_id: int) -> torch.Tensor:
    """Greedy continuation (B, <= max_new_tokens) of a left-padded, model-ready ``batch``: each
    row's tokens up to and including its first end-of-sequence token, ``pad_token_id`` after it.

    One prefill forward over the prompts (images included), then one single-token forward per step
    on the rows still decoding; a finished row is removed from the batch and from the KV cache
    (`Cache.batch_select_indices`, which every transformers 5 cache has).
    """
    mask = batch["attention_mask"]  # ``batch``: input_ids or inputs_embeds, attention_mask, images
    rows = mask.shape[0]
    eos = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=mask.device)
    cache_name, keep = _forward_names(model)
    positions = left_padded_positions(mask)
    out = model(**batch, position_ids=positions, use_cache=True, **keep)
    cache, last = _cache_of(out), positions[:, -1:]
    new = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=mask.device)
    alive = torch.arange(rows, device=mask.device)  # the batch rows still decoding, in cache order
    for step in range(max_new_tokens):
        token = out.logits[:, -1].float().argmax(-1)
        new[alive, step] = token
        finished = torch.isin(token, eos)
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        if bool(finished.any()):
            stay = (~finished).nonzero().squeeze(1)
            cache.batch_select_indices(stay)
            alive, token, mask, last = alive[stay], token[stay], mask[stay], last[stay]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        last = last + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=last, use_cache=True,
                    **{cache_name: cache}, **keep)
    return new


def _batch_order(processor: ProcessorMixin, samples: list[Sample], prompts: list[str]) -> list[int]:
    """Sample indices in batching order: by their task's answer budget (``max_new_tokens``: a
    pool that mixes captions with one-word answers keeps the long answers together, so a batch
    of short answers stops after a step or two instead of decoding a few long rows to the end),
    then by prompt length in tokens (less padding); stable, ties keep their order."""
    lengths = [len(ids) for ids in processor.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    budgets = {name: _answer_budget(name) for name in {s.task for s in samples}}
    return sorted(range(len(prompts)), key=lambda i: (budgets[samples[i].task], lengths[i]))


def _answer_budget(task: str) -> int:
    """The registered task's ``max_new_tokens`` (0 for a name no task is registered under)."""
    from fedmllm.data.registry import TASKS

    return TASKS.get(task).max_new_tokens if task in TASKS else 0
