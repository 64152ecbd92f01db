"""Offline synthetic twins of the paper's twelve datasets (plus the corpus for the tokenizer).

Importing this package registers the twins: downstream synth-scienceqa, synth-iconqa, synth-rsvqa,
synth-pathvqa, synth-flickr30k, synth-chd; upstream synth-okvqa, synth-gqa, synth-textvqa,
synth-ocrvqa, synth-coco-caption, synth-mme. Each twin mirrors its original's answer format and
metric with coarse visual cues and small closed vocabularies, so that a ~1M-parameter LLaVA can
learn it. Downstream twins are distribution-shifted from upstream ones (backgrounds, textures,
question types, answer vocabulary). Every sample has exactly one 64x64 RGB image.
"""

from __future__ import annotations

from fedmllm.data import easyvqa
from fedmllm.data.synth import (  # noqa: F401  (imported to register the tasks)
    chd,
    coco_caption,
    flickr30k,
    gqa,
    iconqa,
    mme,
    ocrvqa,
    okvqa,
    pathvqa,
    rsvqa,
    scienceqa,
    textvqa,
)

TWINS = (scienceqa, iconqa, rsvqa, pathvqa, flickr30k, chd,
         okvqa, gqa, textvqa, ocrvqa, coco_caption, mme)
DOWNSTREAM = tuple(m.NAME for m in TWINS[:6])
UPSTREAM = tuple(m.NAME for m in TWINS[6:])


def suite_texts(n_per_task: int = 64, seed: int = 0) -> list[str]:
    """Texts covering every word the twins and easyvqa can emit, for training a tokenizer.

    For every twin and easyvqa: the prompt (``task.prompt(sample)``), answers and choices of
    ``n_per_task`` train samples, then the module's vocabulary list (``vocabulary()`` or ``VOCAB``: every
    word its templates or caption grammar can emit), so the corpus is complete whatever ``n_per_task`` is.
    """
    if n_per_task < 1:
        raise ValueError(f"n_per_task must be >= 1, got {n_per_task}")
    texts: list[str] = []
    for module in (*TWINS, easyvqa):
        task = module.TASK
        for sample in task.load("train", n=n_per_task, seed=seed):
            texts.append(task.prompt(sample))
            texts.extend(sample.answers)
            texts.extend(sample.choices)
        texts.extend(module.vocabulary() if callable(getattr(module, "vocabulary", None))
                     else module.VOCAB)
    return texts


__all__ = ["DOWNSTREAM", "TWINS", "UPSTREAM", "suite_texts"]
