"""``tiny-llava-ov-large``: the embedded *large* (server-side) MLLM of the edge-collaboration runs.

The same LLaVA-OneVision architecture as `tiny-llava-ov` (SigLIP + MLP projector + Qwen2, 36 image
tokens per 64 px image) at about 8x its parameters: SigLIP 128-dim x 4 layers, Qwen2 256-dim x 6
layers (8 query / 4 key-value heads, MLP 768). It speaks a *different tokenizer*: a WordPiece
vocabulary of `LARGE_VOCAB` entries trained on the same suite corpus, where the small bases use a
word-level one (274 entries), so frequent words are one token on both sides, rarer ones split into
``##`` pieces here, and logit transfer between the two needs a token alignment
(`fedmllm.collab.align`, as FedMKT's).
"""

from __future__ import annotations

from transformers import Qwen2Config, SiglipVisionConfig

from fedmllm.models.base import ModelSpec, register_model
from fedmllm.models.tiny_common import IMAGE_SIZE, PATCH_SIZE, special_ids, suite_tokenizer
from fedmllm.models.tiny_llava_ov import build_llava_ov

LARGE_VOCAB = 384  # WordPiece entries incl. specials and the alphabet (the word-level one: 274)


def large_vision_config() -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False,
    )


def large_text_config(tokenizer) -> Qwen2Config:
    return Qwen2Config(
        hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8,
        num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=512,
        tie_word_embeddings=False, **special_ids(tokenizer),
    )


def build(seed: int):
    """A seeded random-init large tiny LLaVA-OneVision with its WordPiece tokenizer."""
    tokenizer = suite_tokenizer(kind="wordpiece", vocab_size=LARGE_VOCAB)
    return build_llava_ov(seed, tokenizer, large_vision_config(), large_text_config(tokenizer))


SPEC = register_model(ModelSpec(
    name="tiny-llava-ov-large",
    fresh=build,
    description="LLaVA-OneVision, the embedded large (server) model: SigLIP 128x4, MLP projector, "
                f"Qwen2 256x6; WordPiece tokenizer of {LARGE_VOCAB} entries; 36 image tokens",
))
