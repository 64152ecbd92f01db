"""Human-like caption references for the caption twins (synth-coco-caption, synth-flickr30k).

Real captioning references are five people describing one image: they agree on the objects but
differ in wording, word order, detail and what they bother to mention. A twin's image gets five
captions drawn independently from a weighted grammar: a sentence frame, then a phrase per slot
(synonyms, optional attributes, optional scene words), each choice weighted so that a common
wording exists (as "a man riding a wave on top of a surfboard" does on COCO) without every
annotator using it. Scores then land where real models' do: a caption of the most common
wording scores CIDEr-D x 100 of ~100-150 against an image's five references, another image's
caption far less, and one that names the wrong objects ~0 (`benchmarks/caption_refs.py` prints
these floors and ceilings).

A `Choice` is a tuple of ``(text, weight)``; texts may hold ``{slot}`` placeholders filled by
`compose`. `words` lists every text a grammar can emit, for the tokenizer corpus.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

Choice = Sequence[tuple[str, float]]


def pick(rng: random.Random, choice: Choice) -> str:
    """One text of ``choice``, drawn with its weight."""
    texts, weights = zip(*choice)
    return rng.choices(texts, weights=weights, k=1)[0]


def compose(rng: random.Random, frame: str, slots: Mapping[str, Choice | str]) -> str:
    """``frame`` with each ``{slot}`` it holds replaced by a draw from ``slots[slot]`` (a plain
    string is used as is), drawn in the order of ``slots``. Spaces are tidied."""
    text = frame
    for name, value in slots.items():
        if "{" + name + "}" in text:
            text = text.replace("{" + name + "}", value if isinstance(value, str) else pick(rng, value), 1)
    return " ".join(text.split())


def words(*choices: Choice) -> list[str]:
    """Every text in ``choices`` (placeholders removed), for the tokenizer corpus."""
    texts = (" ".join(w for w in text.split() if "{" not in w) for choice in choices for text, _ in choice)
    return [t for t in texts if t]
