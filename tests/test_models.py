"""Models, tokenizer, processors and batch encoding (tiny models, random init, offline)."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlavaOnevisionProcessor, PreTrainedTokenizerFast

from fedmllm.data.collate import IGNORE_INDEX, encode_generate, encode_train
from fedmllm.data.registry import TASKS
from fedmllm.data.synth import suite_texts
from fedmllm.errors import UserError
from fedmllm.models import registry
from fedmllm.models.groups import GROUP_NAMES, num_llm_layers, params_in_group
from fedmllm.models.processors import without_video
from fedmllm.models.registry import MODELS, build_model, save_bundle
from fedmllm.models.tokenizer import train_tokenizer

TINY = ("tiny-llava-ov", "tiny-vila")
IMAGE_TOKENS = {"tiny-llava-ov": 36, "tiny-vila": 16}
TASK_MIX = ("synth-scienceqa", "synth-gqa", "synth-coco-caption", "easyvqa")


@pytest.fixture(scope="module", params=TINY)
def bundle(request):
    return build_model(request.param, pretrained=False, seed=0)


@pytest.fixture(scope="module")
def samples():
    return [s for name in TASK_MIX for s in TASKS.get(name).load("train", n=2, seed=3)]


def test_registry_lists_tiny_models():
    assert MODELS.names() == sorted([*TINY, "tiny-llava-ov-large"])


def test_the_large_base_is_a_bigger_llava_onevision_with_another_tokenizer():
    """The edge-collaboration server model: the same architecture at ~7x the small base's
    parameters, and a WordPiece vocabulary of another size (logit transfer needs an alignment)."""
    from fedmllm.models.tiny_llava_ov_large import LARGE_VOCAB

    large, small = build_model("tiny-llava-ov-large"), build_model("tiny-llava-ov")
    n_large = sum(p.numel() for p in large.model.parameters())
    n_small = sum(p.numel() for p in small.model.parameters())
    assert large.model_type == "llava_onevision" and 6.5 <= n_large / n_small <= 8.5, n_large / n_small
    assert len(large.processor.tokenizer) == LARGE_VOCAB != len(small.processor.tokenizer)
    assert large.processor.tokenizer.tokenize("how many crosses are there?") == \
        ["how", "many", "cross", "##es", "are", "there", "?"]  # frequent words whole, rarer ones in pieces
    assert small.processor.tokenizer.tokenize("how many crosses are there?") == \
        ["how", "many", "crosses", "are", "there", "?"]


def test_build_sizes_and_types(bundle):
    n = sum(p.numel() for p in bundle.model.parameters())
    assert 500_000 <= n <= 1_500_000, n
    expected = {"tiny-llava-ov": "llava_onevision", "tiny-vila": "llava"}[bundle.name]
    assert bundle.model_type == expected == bundle.groups.model_type
    assert num_llm_layers(bundle.model) == 4
    assert not bundle.model.training


def test_fresh_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("tiny-vila", pretrained=False, seed=1).model.state_dict()
    b = build_model("tiny-vila", pretrained=False, seed=1).model.state_dict()
    c = build_model("tiny-vila", pretrained=False, seed=2).model.state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])


def test_groups_partition_every_parameter_once(bundle):
    names = [n for n, _ in bundle.model.named_parameters()]
    seen: list[str] = []
    for group in GROUP_NAMES:
        if getattr(bundle.groups, group) is None:
            with pytest.raises(UserError):
                params_in_group(bundle.model, group)
            continue
        got = params_in_group(bundle.model, group)
        assert got, group
        seen += got
    assert sorted(seen) == sorted(names)
    layer0 = params_in_group(bundle.model, "llm_layers", layers={0})
    assert layer0 and all(".layers.0." in n for n in layer0)
    assert len(params_in_group(bundle.model, "llm_layers")) == 4 * len(layer0)


def test_image_token_count(bundle, samples):
    batch = encode_generate(bundle.processor, samples)
    counts = (batch["input_ids"] == bundle.processor.image_token_id).sum(1)
    assert counts.tolist() == [IMAGE_TOKENS[bundle.name]] * len(samples)


def _answer_tokens(processor, batch, row):
    labels = batch["labels"][row]
    return processor.tokenizer.decode(labels[labels != IGNORE_INDEX])


def test_labels_mask_all_but_answer(bundle, samples):
    batch = encode_train(bundle.processor, samples)
    tok = bundle.processor.tokenizer
    assert (batch["labels"][batch["input_ids"] == bundle.processor.image_token_id] == IGNORE_INDEX).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    for i, s in enumerate(samples):
        target = TASKS.get(s.task).target(s)
        # word-level decoding gives back lower-cased words separated by spaces
        expected = " ".join(tok.convert_ids_to_tokens(tok(target)["input_ids"])) + " <|im_end|>"
        assert _answer_tokens(bundle.processor, batch, i) == expected
        kept = (batch["labels"][i] != IGNORE_INDEX).nonzero().flatten()
        length = int(batch["attention_mask"][i].sum())
        assert kept.tolist() == list(range(length - len(kept), length))  # one span, at the end


def test_forward_backward_finite(bundle, samples):
    model = bundle.model
    model.train()
    try:
        model.zero_grad()
        out = model(**encode_train(bundle.processor, samples))
        assert math.isfinite(out.loss.item()) and out.loss.item() > 0
        out.loss.backward()
        for group in ("projector", "llm_layers", "embeddings", "lm_head"):
            for name in params_in_group(model, group):
                grad = dict(model.named_parameters())[name].grad
                assert grad is not None and torch.isfinite(grad).all(), name
    finally:
        model.zero_grad()
        model.eval()


def test_max_length(bundle, samples):
    full = encode_train(bundle.processor, samples)
    n = full["input_ids"].shape[1]
    cut = encode_train(bundle.processor, samples, max_length=n - 1)
    assert cut["input_ids"].shape[1] == n - 1 == cut["labels"].shape[1]
    with pytest.raises(ValueError, match="cuts image tokens"):
        encode_train(bundle.processor, samples, max_length=10)


def test_save_and_load_round_trip(bundle, samples, tmp_path):
    save_bundle(bundle, tmp_path)
    loaded = build_model(str(tmp_path))
    assert loaded.name == str(tmp_path) and loaded.model_type == bundle.model_type
    assert type(loaded.processor).__name__ == type(bundle.processor).__name__
    assert loaded.processor.to_dict() == bundle.processor.to_dict()
    batch_a = encode_train(bundle.processor, samples)
    batch_b = encode_train(loaded.processor, samples)
    assert batch_a.keys() == batch_b.keys()
    assert all(torch.equal(batch_a[k], batch_b[k]) for k in batch_a)
    with torch.inference_mode():
        assert torch.equal(bundle.model(**batch_a).logits, loaded.model(**batch_b).logits)


def test_dtype_and_random_init_of_a_checkpoint_folder(tmp_path):
    fresh = build_model("tiny-vila", pretrained=False, seed=0)
    save_bundle(fresh, tmp_path)
    half = build_model(str(tmp_path), dtype="bfloat16")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    other = build_model(str(tmp_path), pretrained=False, seed=5)
    assert not torch.equal(other.model.lm_head.weight, fresh.model.lm_head.weight)
    with pytest.raises(UserError, match="unknown dtype"):
        build_model("tiny-vila", pretrained=False, dtype="fp8")


def test_unknown_hub_id_offline_is_a_user_error():
    with pytest.raises(UserError) as err:
        build_model("no-such-org/no-such-mllm")
    msg = str(err.value)
    assert "\n" not in msg and "not found locally" in msg and "HF_HUB_OFFLINE=0" in msg


def test_shipped_checkpoint(tmp_path, monkeypatch):
    """Without a checkpoint: a UserError naming `fedmllm pretrain`; with one: it loads."""
    monkeypatch.setattr(registry, "CHECKPOINTS", tmp_path)
    with pytest.raises(UserError, match="fedmllm pretrain"):
        build_model("tiny-vila")
    fresh = build_model("tiny-vila", pretrained=False, seed=4)
    save_bundle(fresh, registry.checkpoint_dir("tiny-vila"))
    shipped = build_model("tiny-vila")
    assert shipped.name == "tiny-vila"
    assert torch.equal(shipped.model.lm_head.weight, fresh.model.lm_head.weight)


def test_tokenizer_word_level():
    tok = train_tokenizer(["What colour is the Shape? red", "Options: (A) red (B) blue."])
    ids = tok("<|im_start|>user\n<image>\nWhat colour?<|im_end|>")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<|im_start|>", "user", "<image>", "what", "colour", "?",
                                              "<|im_end|>"]
    assert tok.decode(tok("Red. (blue)")["input_ids"]) == "red . ( blue )"
    assert tok.decode(tok("xyzzy")["input_ids"]) == "<unk>"
    assert tok.pad_token_id == 0 and tok.eos_token == "<|im_end|>" and tok.image_token == "<image>"
    assert train_tokenizer(list(reversed(suite_texts(n_per_task=2)))).get_vocab() == \
        train_tokenizer(suite_texts(n_per_task=2)).get_vocab()


def test_collate_with_a_bpe_tokenizer_and_another_template():
    """A hub-style processor: byte-level BPE, llava-hf's template layout, no newline after turns."""
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<pad>", "<image>", "<video>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(suite_texts(n_per_task=4) + ["user assistant"],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|im_end|>",
                                  extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})
    ov = build_model("tiny-llava-ov", pretrained=False).processor
    processor = without_video(LlavaOnevisionProcessor)(
        image_processor=ov.image_processor, tokenizer=tok, num_image_tokens=16,
        vision_feature_select_strategy="full", chat_template=template)
    samples = [s for name in TASK_MIX for s in TASKS.get(name).load("train", n=2, seed=5)]
    batch = encode_train(processor, samples)
    for i, s in enumerate(samples):
        assert _answer_tokens(processor, batch, i) == TASKS.get(s.task).target(s) + "<|im_end|>"
    assert (batch["input_ids"] == processor.image_token_id).sum(1).tolist() == [36] * len(samples)


def test_folder_without_a_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        build_model(str(tmp_path))


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_vl_group_rows_partition_parameters(model_type):
    """The Qwen-VL rows of groups.py, checked on a toy model of the real class."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.for_model(
        model_type,
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=64,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, embed_dim=16, hidden_size=32, out_hidden_size=32, num_heads=2,
                           intermediate_size=32, fullatt_block_indexes=[1]),
    )
    model = AutoModelForImageTextToText.from_config(config)
    names = sorted(n for n, _ in model.named_parameters())
    groups = [g for g in GROUP_NAMES if g != "extra"]
    assert sorted(n for g in groups for n in params_in_group(model, g)) == names
    assert params_in_group(model, "projector") and num_llm_layers(model) == 2
