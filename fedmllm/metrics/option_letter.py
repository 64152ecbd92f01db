"""Option-letter accuracy for multiple-choice tasks (ScienceQA, IconQA).

The letter is extracted from free text robustly, in this order (first rule that fires wins):

1. the whole answer is a letter, possibly wrapped: ``B``, ``b``, ``(B)``, ``B.``, ``B)``, ``B:``;
2. the answer equals one choice's text (normalized) -> that choice's letter;
3. the answer starts with a letter and a delimiter: ``B) text``, ``(B) text``, ``B. text``;
4. a phrase: ``The answer is B``, ``Answer: (C)``, ``option b.``;
5. exactly one distinct valid ``(X)`` anywhere;
6. exactly one distinct valid capital letter standing alone, ignoring "A"/"I" used as a word
   (followed by a lowercase word: "A cat", "I think").

Valid letters are the first ``len(choices)`` capitals (any capital when the sample has no choices).
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from fedmllm.data.record import LETTERS, Sample
from fedmllm.metrics.base import Metric, register_metric
from fedmllm.metrics.normalize import check_aligned, normalize_answer

_WHOLE = re.compile(r"^\(?\s*([A-Za-z])\s*\)?\s*[.:)]?$")
_LEADING = re.compile(r"^\(?([A-Za-z])\s*[).:]\s+\S")
# A lowercase letter after the phrase counts only when nothing follows it ("answer is a cat" no).
_PHRASE = re.compile(
    r"(?i:\b(?:answer|option|choice)\b(?:\s+is\b)?)\s*:?\s*\(?"
    r"([A-Z](?![A-Za-z])|[a-z](?=\s*\)?\s*[.,;:!?]?\s*$))"
)
_PAREN = re.compile(r"\(([A-Z])\)")
_BARE = re.compile(r"\b([A-Z])\b(\s+[a-z])?")


def _valid_letters(choices: Sequence[str]) -> str:
    return LETTERS[: len(choices)] if choices else LETTERS


def _unique(found: list[str], valid: str) -> Optional[str]:
    letters = {f for f in found if f in valid}
    return letters.pop() if len(letters) == 1 else None


def extract_letter(prediction: str, choices: Sequence[str] = ()) -> Optional[str]:
    """The option letter (upper case) that ``prediction`` designates, or None if none is found."""
    text = prediction.strip()
    if not text:
        return None
    whole = _WHOLE.match(text)
    if whole:
        return whole.group(1).upper()
    norm = normalize_answer(text)
    for i, choice in enumerate(choices):
        if norm and norm == normalize_answer(choice):
            return LETTERS[i]
    leading = _LEADING.match(text)
    if leading:
        return leading.group(1).upper()
    valid = _valid_letters(choices)
    phrase = _PHRASE.search(text)
    if phrase and phrase.group(1).upper() in valid:
        return phrase.group(1).upper()
    paren = _unique(_PAREN.findall(text), valid)
    if paren:
        return paren
    # "A"/"I" followed by a lowercase word are the article/pronoun, not options.
    bare = [m.group(1) for m in _BARE.finditer(text)
            if not (m.group(1) in "AI" and m.group(2))]
    return _unique(bare, valid)


def compute(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """``score``: percent of extracted letters equal to ``answers[0]``; ``parsed``: percent of
    predictions from which a letter could be extracted at all."""
    check_aligned(predictions, samples, "option_letter")
    hits = parsed = 0
    for pred, sample in zip(predictions, samples):
        if not sample.answers:
            raise ValueError(f"option_letter: sample {sample.uid!r} has no reference letter")
        letter = extract_letter(pred, sample.choices)
        parsed += letter is not None
        hits += letter is not None and letter == sample.answers[0].strip().upper()
    n = len(samples)
    return {"score": 100.0 * hits / n, "parsed": 100.0 * parsed / n}


METRIC = register_metric(Metric(
    name="option_letter",
    higher_is_better=True,
    compute=compute,
    aggregation="mean",
    description="multiple-choice accuracy of the option letter extracted from the answer, percent",
))
