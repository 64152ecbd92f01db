"""Faster PIL image processors for batches of small images, equal to transformers' own output.

transformers' PIL image processors work image by image and crop by crop: every resize goes
numpy -> PIL -> numpy (also when the size does not change), then rescale and normalize run per
crop. For the embedded models (64 px images, 64 px crops) that Python overhead was about a
quarter of a batched generation. The subclasses here keep transformers' code for the geometry
(resize, crops, anyres patches) and change only two things:

* ``resize`` to the size a uint8 image already has returns a copy of it: PIL's ``Image.resize``
  returns ``self.copy()`` for the same size, so the result is the same array;
* ``_preprocess`` runs the geometry as transformers does (in uint8, before any arithmetic), then
  rescales and normalizes every crop of the batch as one array, with the same dtypes and the same
  order of operations as `transformers.image_transforms.rescale` / ``normalize`` (so the same
  bits), and pads afterwards (padding is zeros after normalization in both processors).

Crops of different shapes or dtypes, or a channel count that ``image_mean`` does not match, go
through transformers' own ``rescale`` / ``normalize``, crop by crop. The classes keep the names of
the classes they extend, so saved processor files are unchanged. `with_fast_images` swaps one in.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import numpy as np
from transformers import ProcessorMixin
from transformers.image_processing_utils import BatchFeature, get_patch_output_size
from transformers.image_utils import ChannelDimension
from transformers.models.llava_onevision import image_processing_pil_llava_onevision as _ov
from transformers.models.siglip import image_processing_pil_siglip as _siglip


class _FastArithmetic:
    """Mixin over a transformers PIL image processor (see the module docstring)."""

    def resize(self, image, size, resample=None, reducing_gap=None, **kwargs):
        if (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[0] == 3 and size.height and size.width and not size.shortest_edge
                and not (size.max_height and size.max_width) and image.shape[1:] == (size.height, size.width)):
            return image.copy()
        return super().resize(image, size, resample=resample, reducing_gap=reducing_gap, **kwargs)

    def _preprocess(self, images, *args, do_rescale: bool, rescale_factor: float, do_normalize: bool,
                    image_mean: Any, image_std: Any, do_pad: Any, return_tensors: Any = None,
                    **kwargs) -> BatchFeature:
        geometry = super()._preprocess(images, *args, do_rescale=False, rescale_factor=rescale_factor,
                                       do_normalize=False, image_mean=image_mean, image_std=image_std,
                                       do_pad=False, return_tensors=None, **kwargs)
        crops = geometry["pixel_values"]
        pixels = self._arithmetic(crops, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
        if do_pad:
            pixels = self._pad_batch(pixels, kwargs)
        return BatchFeature(data={**geometry, "pixel_values": pixels}, tensor_type=return_tensors)

    def _arithmetic(self, crops: list[np.ndarray], do_rescale: bool, rescale_factor: float,
                    do_normalize: bool, mean: Any, std: Any) -> list[np.ndarray]:
        """Each crop rescaled and normalized exactly as transformers does, the batch at once."""
        if not (do_rescale or do_normalize) or not crops:
            return crops
        first = crops[0]
        channels = first.shape[-3] if first.ndim >= 3 else 0
        same = all(c.shape == first.shape and c.dtype == first.dtype for c in crops)
        fits = channels and all(not isinstance(v, Collection) or len(v) == channels for v in (mean, std))
        if not (same and fits):  # transformers' own per-crop functions
            out = []
            for crop in crops:
                crop = self._each(crop, lambda c: self.rescale(c, rescale_factor)) if do_rescale else crop
                crop = self._each(crop, lambda c: self.normalize(c, mean, std)) if do_normalize else crop
                out.append(crop)
            return out
        x = np.stack(crops)
        steps = (do_rescale, rescale_factor, do_normalize, mean, std)
        if x.dtype != np.uint8:
            return list(_rescale_normalize(x, *steps))
        # uint8: compute each channel's 256 possible results once (the same operations on the
        # same values), then look every pixel up in one gather: pixel value + 256 x its channel
        # indexes the flattened table (uint16 indices: 2.6x faster than a take per channel view).
        table = _rescale_normalize(np.tile(np.arange(256, dtype=np.uint8), (channels, 1))[:, :, None], *steps)
        index = x.astype(np.uint16 if channels <= 256 else np.intp)
        index += (np.arange(channels, dtype=index.dtype) * 256)[:, None, None]
        return list(np.take(table[:, :, 0].ravel(), index))

    @staticmethod
    def _each(crop: np.ndarray, fn) -> np.ndarray:
        """``fn`` on a (C, H, W) crop, or on each of a stack of them (LLaVA-OV's patches)."""
        return fn(crop) if crop.ndim == 3 else np.array([fn(c) for c in crop])

    def _pad_batch(self, pixels: list[np.ndarray], kwargs: dict) -> list[np.ndarray]:
        raise NotImplementedError


def _rescale_normalize(x: np.ndarray, do_rescale: bool, rescale_factor: float, do_normalize: bool,
                       mean: Any, std: Any) -> np.ndarray:
    """`transformers.image_transforms.rescale` then ``normalize`` on an array whose axis -3 is
    the channel axis, with their dtypes and order of operations (hence the same bits)."""
    if do_rescale:  # rescale: upcast to float64, multiply, cast to float32
        x = (x.astype(np.float64) * rescale_factor).astype(np.float32)
    if do_normalize:  # normalize: float32 unless already floating; mean and std in that dtype
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        channels = x.shape[-3]
        m, s = (np.array(v if isinstance(v, Collection) else [v] * channels, dtype=x.dtype) for v in (mean, std))
        x = (x - m[:, None, None]) / s[:, None, None]
    return x


class SiglipImageProcessorPil(_FastArithmetic, _siglip.SiglipImageProcessorPil):
    """transformers' `SiglipImageProcessorPil`, faster on batches (same output)."""

    def _pad_batch(self, pixels, kwargs):
        return self.pad(pixels, pad_size=kwargs.get("pad_size"))


class LlavaOnevisionImageProcessorPil(_FastArithmetic, _ov.LlavaOnevisionImageProcessorPil):
    """transformers' `LlavaOnevisionImageProcessorPil`, faster on batches (same output)."""

    def _pad_batch(self, pixels, kwargs):
        if len({len(p) for p in pixels}) == 1:  # as many patches each: zero padding, a copy
            return pixels
        return self._pad_for_batching(pixels)

    def _pad_for_patching(self, image, target_resolution):
        resized = get_patch_output_size(image, target_resolution, input_data_format=ChannelDimension.FIRST)
        if resized == tuple(target_resolution) == image.shape[-2:]:  # nothing to pad: np.pad copies
            return image.copy()
        return super()._pad_for_patching(image, target_resolution)


# transformers' class -> its faster subclass (a table: one row per supported image processor)
FAST_IMAGE_PROCESSORS: dict[type, type] = {
    _siglip.SiglipImageProcessorPil: SiglipImageProcessorPil,
    _ov.LlavaOnevisionImageProcessorPil: LlavaOnevisionImageProcessorPil,
}


def with_fast_images(processor: ProcessorMixin) -> ProcessorMixin:
    """``processor`` with its image processor replaced by the faster subclass (same settings), if
    its class is exactly one of `FAST_IMAGE_PROCESSORS` (a further subclass may change the
    steps, so it is left alone); returns ``processor``."""
    image_processor = getattr(processor, "image_processor", None)
    fast = FAST_IMAGE_PROCESSORS.get(type(image_processor))
    if fast is not None:
        swapped = copy.copy(image_processor)  # every setting, as set on the original
        swapped.__class__ = fast
        processor.image_processor = swapped
    return processor
