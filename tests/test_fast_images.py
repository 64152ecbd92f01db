"""The faster image processors (`fedmllm.models.fast_images`) give transformers' own output.

Reference: the same processor object with its image processor's class set back to transformers'
class (same settings). Images: the synthetic twins of every downstream and upstream task, odd
sizes, other modes, and settings where the fast steps do not apply (they must fall back).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from fedmllm.data.collate import chat_prompt, encode_generate, encode_train
from fedmllm.data.registry import TASKS
from fedmllm.data.synth import DOWNSTREAM, UPSTREAM
from fedmllm.models.fast_images import FAST_IMAGE_PROCESSORS, with_fast_images
from fedmllm.models.registry import build_model

TINY = ("tiny-llava-ov", "tiny-vila")
ODD_SIZES = [(64, 64), (37, 50), (100, 30), (1, 1), (65, 64), (48, 96), (128, 128), (7, 300)]


@pytest.fixture(scope="module", params=TINY)
def bundle(request):
    return build_model(request.param)


def reference(image_processor):
    """The same image processor as transformers' own class (the swap undone)."""
    hf = next(k for k, v in FAST_IMAGE_PROCESSORS.items() if v is type(image_processor))
    out = copy.copy(image_processor)
    out.__class__ = hf
    return out


def reference_processor(processor):
    out = copy.copy(processor)
    out.image_processor = reference(processor.image_processor)
    return out


def assert_same(a, b):
    assert list(a.keys()) == list(b.keys())
    for key in a:
        x, y = a[key], b[key]
        assert type(x) is type(y), key
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert torch.allclose(x.double(), y.double(), rtol=0, atol=1e-6), key
            assert torch.equal(x, y), key  # in fact the same bits
        elif isinstance(x, list) and x and isinstance(x[0], np.ndarray):
            assert len(x) == len(y) and all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in zip(x, y)), key
        else:
            assert x == y, key


def task_images(split: str, n: int) -> list:
    return [s.images[0] for name in DOWNSTREAM + UPSTREAM for s in TASKS.get(name).load(split, n=n, seed=5)]


def random_images(sizes, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    return [Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8).squeeze(-1)
                            if channels == 1 else rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode)
            for h, w in sizes]


def test_build_model_swaps_in_the_fast_class(bundle):
    ip = bundle.processor.image_processor
    assert type(ip) in FAST_IMAGE_PROCESSORS.values()
    assert type(ip).__name__ == type(reference(ip)).__name__  # saved files name the same class
    assert ip.to_dict() == reference(ip).to_dict()


@pytest.mark.parametrize("split", ["train", "test"])
def test_task_twins_equal(bundle, split):
    ip = bundle.processor.image_processor
    images = task_images(split, 3)
    for tensors in ("pt", None):
        assert_same(ip(images, return_tensors=tensors), reference(ip)(images, return_tensors=tensors))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_odd_sizes_and_modes_equal(bundle, mode):
    ip = bundle.processor.image_processor
    images = random_images(ODD_SIZES, mode)
    assert_same(ip(images, return_tensors="pt"), reference(ip)(images, return_tensors="pt"))
    for image in images[:3]:  # one at a time (generation at batch 1)
        assert_same(ip([image], return_tensors="pt"), reference(ip)([image], return_tensors="pt"))


@pytest.mark.parametrize("change", [
    {"do_normalize": False}, {"do_rescale": False}, {"do_rescale": False, "do_normalize": False},
    {"image_mean": 0.25, "image_std": 0.75}, {"size": {"height": 48, "width": 80}},
    {"resample": Image.Resampling.BILINEAR}, {"do_pad": False},
])
def test_other_settings_equal(bundle, change):
    ip = bundle.processor.image_processor
    images = random_images(ODD_SIZES[:5], seed=1)
    assert_same(ip(images, return_tensors="pt", **change), reference(ip)(images, return_tensors="pt", **change))


def test_hub_sized_onevision_settings_equal():
    """LLaVA-OneVision's hub settings (384 px crops, anyres grid): crops of several shapes."""
    ip = build_model("tiny-llava-ov").processor.image_processor
    hub = copy.copy(ip)
    hub.size, hub.image_grid_pinpoints = type(ip.size)(height=384, width=384), [[384, 384], [384, 768], [768, 384]]
    images = random_images([(30, 70), (64, 64), (90, 40)], seed=2)
    assert_same(hub(images, return_tensors="pt"), reference(hub)(images, return_tensors="pt"))


def test_float_arrays_fall_back_equal(bundle):
    ip = bundle.processor.image_processor
    rng = np.random.default_rng(3)
    images = [rng.random((3, 64, 64), dtype=np.float32), rng.random((3, 40, 64), dtype=np.float32)]
    assert_same(ip(images, return_tensors="pt"), reference(ip)(images, return_tensors="pt"))


def test_mismatched_mean_still_raises(bundle):
    ip = bundle.processor.image_processor
    images = random_images([(64, 64)] * 2)
    for proc in (ip, reference(ip)):
        with pytest.raises(ValueError, match="mean must have 3 elements"):
            proc(images, image_mean=[0.5, 0.5], image_std=[0.5, 0.5])


def test_encoded_batches_equal(bundle):
    """encode_train / encode_generate give what the processor called with tensors gives."""
    samples = [s for name in DOWNSTREAM + UPSTREAM for s in TASKS.get(name).load("test", n=2, seed=4)]
    hf = reference_processor(bundle.processor)
    assert_same(encode_train(bundle.processor, samples), encode_train(hf, samples))
    assert_same(encode_generate(bundle.processor, samples), encode_generate(hf, samples))
    prompts = [chat_prompt(hf, s) for s in samples]
    direct = hf(text=prompts, images=[s.images[0] for s in samples], padding=True, padding_side="left",
                return_tensors="pt")
    assert_same(encode_generate(bundle.processor, samples, prompts), dict(direct))


def test_subclasses_are_left_alone():
    ip = reference(build_model("tiny-vila").processor.image_processor)

    class Custom(type(ip)):
        pass

    custom = copy.copy(ip)
    custom.__class__ = Custom
    holder = type("Holder", (), {})()
    holder.image_processor = custom
    assert with_fast_images(holder).image_processor is custom
