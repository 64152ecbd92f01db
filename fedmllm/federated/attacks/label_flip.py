"""``label_flip``: data poisoning, the client trains on wrong answers.

A fixed permutation per task: multiple-choice answers (option letters) move to the next option
(A -> B, ..., last -> A); other answers move to the next distinct answer of the task among the
client's samples, in sorted order (yes -> no -> yes; "cardiomegaly" -> "normal" -> ...). Every
sample is flipped (``rate`` < 1 flips that share, chosen by the client's seed).
"""

from __future__ import annotations

import dataclasses
import string

from fedmllm.errors import UserError
from fedmllm.federated.attacks.base import Attack, register_attack


def _next_letter(answer: str, n_choices: int) -> str:
    letters = string.ascii_uppercase[:n_choices]
    return letters[(letters.index(answer) + 1) % n_choices] if answer in letters else answer


@register_attack
class LabelFlip(Attack):
    name = "label_flip"
    description = "label flipping: train on a fixed permutation of the answers (data poisoning)"
    defaults = {"rate": 1.0}

    def validate(self) -> None:
        if not 0 < self.options["rate"] <= 1:
            raise UserError(f"attack 'label_flip' option 'rate' must be in (0, 1], got {self.options['rate']}")

    def poison_samples(self, samples, rng):
        distinct: dict[str, list[str]] = {}
        for s in samples:
            if not s.choices:
                distinct.setdefault(s.task, [])
                if s.answers[0] not in distinct[s.task]:
                    distinct[s.task].append(s.answers[0])
        for answers in distinct.values():
            answers.sort()
        flip = rng.random(len(samples)) < self.options["rate"]
        out = []
        for s, f in zip(samples, flip):
            if not f:
                out.append(s)
            elif s.choices:
                out.append(dataclasses.replace(s, answers=[_next_letter(s.answers[0], len(s.choices))]))
            else:
                d = distinct[s.task]
                wrong = d[(d.index(s.answers[0]) + 1) % len(d)]
                out.append(dataclasses.replace(s, answers=[wrong]))
        return out
