"""``backdoor``: a visual trigger mapped to a target answer (Gu et al. 2017, BadNets, in the
federated form of Bagdasaryan et al. 2020).

The malicious client stamps a black-and-white checkerboard patch (``patch`` x the image side) into
the bottom-right corner of a share (``rate``) of its training images and sets their answer to
``target``; the rest of its data stays clean, so its clean score looks normal. The experiment
reports the attack success rate: the share of triggered test images (of every downstream task,
those whose answer is not the target) that the global model answers with ``target``
(`attack_success_rate`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from fedmllm.errors import UserError
from fedmllm.federated.attacks.base import Attack, register_attack


def stamp(image: Image.Image, patch: float) -> Image.Image:
    """``image`` with the trigger: a 4 x 4 checkerboard of side ``patch`` x min(w, h), bottom right."""
    img = np.array(image.convert("RGB"))
    h, w = img.shape[:2]
    side = max(4, int(round(patch * min(h, w))))
    cell = max(1, side // 4)
    yy, xx = np.mgrid[0:side, 0:side]
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    img[h - side:, w - side:, :] = board[: min(side, h), : min(side, w), None]
    return Image.fromarray(img)


def triggered(sample, patch: float, target: str | None = None):
    """A copy of ``sample`` with every image stamped (answer set to ``target`` if given)."""
    changes = {"images": [stamp(im, patch) for im in sample.images]}
    if target is not None:
        changes["answers"] = [target]
    return dataclasses.replace(sample, **changes)


@register_attack
class Backdoor(Attack):
    name = "backdoor"
    description = "visual-trigger backdoor to a target answer, Gu et al. 2017 / Bagdasaryan et al. 2020"
    defaults = {"target": "zebra", "rate": 0.5, "patch": 0.25}

    def validate(self) -> None:
        o = self.options
        if not o["target"].strip():
            raise UserError("attack 'backdoor' option 'target' must be a non-empty answer")
        if not 0 < o["rate"] <= 1:
            raise UserError(f"attack 'backdoor' option 'rate' must be in (0, 1], got {o['rate']}")
        if not 0 < o["patch"] <= 0.5:
            raise UserError(f"attack 'backdoor' option 'patch' must be in (0, 0.5], got {o['patch']}")

    def poison_samples(self, samples, rng):
        o = self.options
        chosen = rng.random(len(samples)) < o["rate"]
        return [triggered(s, o["patch"], o["target"]) if c and s.images else s for s, c in zip(samples, chosen)]


def attack_success_rate(predict, test_sets: dict[str, list], options: dict) -> dict:
    """``{"asr": percent, "n": count}``: the share of triggered test samples (with an image and a
    true answer other than the target) that ``predict(samples) -> answers`` answers with the target
    (compared after `normalize_answer`)."""
    from fedmllm.metrics.normalize import normalize_answer

    target = normalize_answer(options["target"])
    pool = [triggered(s, options["patch"]) for samples in test_sets.values() for s in samples
            if s.images and all(normalize_answer(a) != target for a in s.answers)]
    if not pool:
        return {"asr": 0.0, "n": 0}
    hits = sum(normalize_answer(p) == target for p in predict(pool))
    return {"asr": 100.0 * hits / len(pool), "n": len(pool)}
