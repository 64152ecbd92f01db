"""``tiny-vila``: an embedded VILA-style model (SigLIP + ``mlp2x_gelu`` projector + Qwen2).

VILA has no transformers class; as in the design, `LlavaForConditionalGeneration` stands in: its
multi-modal projector (linear, GELU, linear) is VILA's ``mlp2x_gelu``. One 64 px image in 16 px
patches gives 4 x 4 = 16 image tokens (SigLIP has no CLS token, so every patch is kept).
"""

from __future__ import annotations

from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from fedmllm.models.base import ModelSpec, register_model
from fedmllm.models.tiny_common import (
    IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD, PATCH_SIZE, seeded_init, suite_tokenizer, text_config,
    vision_config,
)


def build(seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A seeded random-init tiny VILA-style LLaVA and its processor (fresh tokenizer)."""
    tokenizer = suite_tokenizer()
    config = LlavaConfig(
        vision_config=vision_config(),
        text_config=text_config(tokenizer),
        image_token_index=tokenizer.image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = seeded_init(LlavaForConditionalGeneration, config, seed, tokenizer)
    # VILA feeds SigLIP a plain resize to its input size (no crop).
    image_processor = SiglipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
        image_token=tokenizer.image_token,
        num_additional_image_tokens=0,
    )
    return model, processor


SPEC = register_model(ModelSpec(
    name="tiny-vila",
    fresh=build,
    description="VILA-style stand-in at toy size: SigLIP 64x2 (64 px, 16 px patches), "
                "mlp2x_gelu projector, Qwen2 128x4 via LlavaForConditionalGeneration; 16 image tokens",
))
