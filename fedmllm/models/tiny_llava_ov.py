"""``tiny-llava-ov``: an embedded LLaVA-OneVision (SigLIP + 2-layer MLP projector + Qwen2).

Real architecture class (`LlavaOnevisionForConditionalGeneration`) at toy size. With a single
grid pinpoint ``[[64, 64]]`` a 64 x 64 image becomes two 64 px crops (the base image and one
anyres tile); the processor expands ``<image>`` to 16 base tokens + 4 x 4 tile tokens + 4
``image_newline`` tokens = 36 tokens (non-square images give fewer after unpadding).
"""

from __future__ import annotations

from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)

from fedmllm.models.base import ModelSpec, register_model
from fedmllm.models.processors import without_video
from fedmllm.models.tiny_common import (
    IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD, PATCH_SIZE, seeded_init, suite_tokenizer, text_config,
    vision_config,
)

GRID_PINPOINTS = [[IMAGE_SIZE, IMAGE_SIZE]]


def build(seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A seeded random-init tiny LLaVA-OneVision and its processor (fresh tokenizer)."""
    tokenizer = suite_tokenizer()
    return build_llava_ov(seed, tokenizer, vision_config(), text_config(tokenizer))


def build_llava_ov(seed: int, tokenizer, vision, text) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A seeded random-init LLaVA-OneVision of the given vision / text configs and its processor."""
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        projector_hidden_act="gelu",
        # SigLIP has no CLS token: keep every patch ("full"). With only 2 vision layers the last
        # one's output is the feature map (LLaVA-OV's checkpoints also take hidden_states[-1]).
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = seeded_init(LlavaOnevisionForConditionalGeneration, config, seed, tokenizer)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_grid_pinpoints=GRID_PINPOINTS,
        image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
    )
    processor = without_video(LlavaOnevisionProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
        image_token=tokenizer.image_token,
        video_token=tokenizer.video_token,
        vision_aspect_ratio="anyres_max_9",
    )
    return model, processor


SPEC = register_model(ModelSpec(
    name="tiny-llava-ov",
    fresh=build,
    description="LLaVA-OneVision at toy size: SigLIP 64x2 (64 px, 16 px patches), "
                "MLP projector, Qwen2 128x4; 36 image tokens",
))
