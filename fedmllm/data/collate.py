"""Batch encoding of `Sample` records for training (answer-only loss) and for generation.

One chat turn per sample: the user turn holds the image placeholder and the task's prompt, the
assistant turn the task's target followed by the tokenizer's end-of-turn (EOS) token. The
processor's own chat template renders the turns, so the same code serves the tiny models and hub
checkpoints (LLaVA-OneVision, LLaVA, ...). Every sample carries exactly one image.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from transformers import BatchFeature, ProcessorMixin

from fedmllm.data.record import Sample
from fedmllm.data.registry import TASKS

IGNORE_INDEX = -100  # label value the cross-entropy loss of transformers skips


def chat_prompt(processor: ProcessorMixin, sample: Sample) -> str:
    """The rendered user turn (image + task prompt) followed by the assistant's generation prompt."""
    return chat_prompts(processor, [sample])[0]


def chat_prompts(processor: ProcessorMixin, samples: list[Sample]) -> list[str]:
    """`chat_prompt` of every sample, in one call of the chat template (the same texts; one call
    per sample would pay transformers' per-call set-up, ~0.15 ms, for every sample)."""
    conversations = [[{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": TASKS.get(s.task).prompt(s)},
    ]}] for s in samples]
    if not conversations:
        return []
    return list(processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False))


def end_of_turn(processor: ProcessorMixin) -> str:
    """The token that closes the assistant's answer (``<|im_end|>`` for Qwen2 chat models)."""
    eos = processor.tokenizer.eos_token
    if not eos:
        raise ValueError("the tokenizer has no eos_token: cannot mark the end of the answer")
    return eos


def _images(samples: list[Sample]) -> list[Any]:
    for s in samples:
        if len(s.images) != 1:
            raise ValueError(f"sample {s.uid!r} has {len(s.images)} images; fedmllm feeds exactly one")
    return [s.images[0] for s in samples]


def _add_special_tokens(processor: ProcessorMixin, text: str) -> bool:
    # Templates that already write the BOS token must not get a second one from the tokenizer.
    bos = processor.tokenizer.bos_token
    return not (bos and text.startswith(bos))


def encode_train(processor: ProcessorMixin, samples: list[Sample],
                 max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Right-padded training batch with ``labels`` for answer-only loss.

    ``labels`` is ``-100`` everywhere except the answer's tokens and the end-of-turn token that
    follows it (image, prompt and padding tokens are masked). ``max_length`` cuts longer rows at
    the end; it must leave every image token in place.
    """
    if not samples:
        raise ValueError("encode_train needs at least one sample")
    prompts = chat_prompts(processor, samples)
    eot = end_of_turn(processor)
    texts = [p + TASKS.get(s.task).target(s) + eot for p, s in zip(prompts, samples)]
    special = _add_special_tokens(processor, prompts[0])
    # Answer length from text-only tokenization (<image> is one token in both, so it cancels).
    tok = processor.tokenizer
    prompt_ids = tok(prompts, add_special_tokens=special)["input_ids"]
    full_ids = tok(texts, add_special_tokens=special)["input_ids"]
    answer_lens = []
    for s, p, f in zip(samples, prompt_ids, full_ids):
        if f[: len(p)] != p:
            raise ValueError(f"sample {s.uid!r}: the answer's tokens merge with the prompt's")
        answer_lens.append(len(f) - len(p))
    batch = _encode(processor, texts, _images(samples), padding_side="right", add_special_tokens=special)
    input_ids = batch["input_ids"]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for i, (length, n) in enumerate(zip(batch["attention_mask"].sum(1).tolist(), answer_lens)):
        labels[i, length - n: length] = input_ids[i, length - n: length]
    batch["labels"] = labels
    if max_length is not None and input_ids.shape[1] > max_length:
        batch = _truncate(processor, batch, max_length)
    return batch


def _truncate(processor: ProcessorMixin, batch: dict[str, Any], max_length: int) -> dict[str, Any]:
    image_id = getattr(processor, "image_token_id", None)
    before = (batch["input_ids"] == image_id).sum(1)
    for key in ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids"):
        if key in batch:
            batch[key] = batch[key][:, :max_length]
    if not torch.equal(before, (batch["input_ids"] == image_id).sum(1)):
        raise ValueError(f"max_length={max_length} cuts image tokens; raise it above the prompt length")
    return batch


def encode_generate(processor: ProcessorMixin, samples: list[Sample],
                    prompts: Optional[list[str]] = None) -> dict[str, torch.Tensor]:
    """Left-padded batch of user turns ending in the assistant's generation prompt.

    ``prompts``: the samples' `chat_prompt` texts when the caller has them already."""
    if not samples:
        raise ValueError("encode_generate needs at least one sample")
    if prompts is None:
        prompts = chat_prompts(processor, samples)
    elif len(prompts) != len(samples):
        raise ValueError(f"encode_generate: {len(prompts)} prompts for {len(samples)} samples")
    return _encode(processor, prompts, _images(samples), padding_side="left",
                   add_special_tokens=_add_special_tokens(processor, prompts[0]))


def _encode(processor: ProcessorMixin, texts: list[str], images: list[Any], **kwargs: Any) -> dict[str, Any]:
    """``processor(text=texts, images=images, padding=True, return_tensors="pt", **kwargs)``,
    as lists first and tensors at the end (the same tensors): with ``return_tensors="pt"``
    transformers' LLaVA-OneVision processor walks a tensor once per image, quadratic in the batch."""
    enc = processor(text=texts, images=images, padding=True, **kwargs)
    try:
        return dict(BatchFeature(dict(enc), tensor_type="pt"))
    except ValueError:  # values only the processor's own steps can batch (another processor class)
        return dict(processor(text=texts, images=images, padding=True, return_tensors="pt", **kwargs))


def to_model(batch: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """``batch`` on ``model``'s device; floating tensors (pixel values) also in its dtype."""
    param = next(model.parameters())
    return {k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device))
            if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
