"""Shared machinery of the synthetic twins: stable per-sample randomness and the loader factory.

Every twin draws sample ``i`` of ``(task, split, seed)`` from its own `random.Random`, seeded by a
SHA-256 of those four values, so a sample never depends on ``n`` or on other samples, "train" and
"test" are independent streams, and results are identical across processes and machines (Python's
``hash()`` is salted per process, so it is never used).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from PIL import Image

from fedmllm.data.record import Loader, Sample
from fedmllm.errors import UserError


@dataclass
class Item:
    """What a twin's generator returns for one sample (the loader adds uid and task)."""

    image: Image.Image
    question: str
    answers: list[str]
    qtype: str
    label: str
    choices: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def stable_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded by a SHA-256 of ``parts`` (stable across runs and machines)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def check_request(name: str, n: Optional[int], source: Optional[str], options: dict,
                  allowed: tuple[str, ...] = ()) -> int:
    """Validate a twin's loader arguments (``allowed``: option names it takes); returns ``n``."""
    if n is None:
        raise UserError(f"task {name!r} is synthetic: give the number of samples n (e.g. n=512)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"task {name!r}: n must be a non-negative integer, got {n!r}")
    if source is not None:
        raise UserError(f"task {name!r} is synthetic and takes no source (got {source!r})")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise UserError(f"task {name!r}: unknown option(s) {', '.join(unknown)}; valid: {valid}")
    return n


def to_sample(name: str, split: str, seed: int, i: int, item: Item) -> Sample:
    """Wrap a generated `Item` as a `Sample` with uid ``<task>/<split>/<seed>/<i>``."""
    meta = {"label": item.label, "qtype": item.qtype, **item.meta}
    return Sample(
        uid=f"{name}/{split}/{seed}/{i}",
        task=name,
        images=[item.image],
        question=item.question,
        answers=list(item.answers),
        choices=list(item.choices),
        meta=meta,
    )


def twin_loader(name: str, build: Callable[..., Item], options: tuple[str, ...] = ()) -> Loader:
    """A loader whose sample ``i`` is ``build(stable_rng(name, split, seed, i), **options)``.

    ``options`` names the keyword options ``build`` accepts; any other option is a `UserError`.
    """

    def loader(split: str = "test", n: Optional[int] = None, seed: int = 0,
               source: Optional[str] = None, indices: Optional[list[int]] = None,
               **kwargs: Any) -> list[Sample]:
        count = check_request(name, n, source, kwargs, options)
        wanted = range(count) if indices is None else indices
        bad = [i for i in wanted if not 0 <= i < count]
        if bad:
            raise ValueError(f"{name}: sample indices {bad[:5]} outside 0..{count - 1}")
        return [to_sample(name, split, seed, i, build(stable_rng(name, split, seed, i), **kwargs))
                for i in wanted]

    loader.__doc__ = f"Generate ``n`` samples of the synthetic twin {name!r}."
    return loader


def pick_other(rng: random.Random, options: tuple[str, ...] | list[str], exclude: str) -> str:
    """A uniformly chosen element of ``options`` other than ``exclude``."""
    return rng.choice([o for o in options if o != exclude])


def yes_no(flag: bool) -> str:
    """``"yes"`` or ``"no"``."""
    return "yes" if flag else "no"


def letter_of(choices: list[str], correct: str) -> str:
    """Option letter (``"A"``, ``"B"``, ...) of ``correct`` within ``choices``."""
    return "ABCDEFGH"[choices.index(correct)]


def expand(template: str, **values: "list[str] | tuple[str, ...]") -> list[str]:
    """Fill ``template`` so that every value of every placeholder appears at least once.

    Used to list every word a twin can emit (for the tokenizer corpus) without the full product.
    """
    longest = max((len(v) for v in values.values()), default=1)
    return [template.format(**{k: v[i % len(v)] for k, v in values.items()})
            for i in range(longest)]
