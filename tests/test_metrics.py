"""Metrics: hand-computed values, edge cases, an independent CIDEr-D check, E/F/O, and a contract
test over every registered metric."""

from __future__ import annotations

import math

import pytest

from fedmllm.data.record import Sample
from fedmllm.errors import UserError
from fedmllm.metrics import (
    METRICS, cider_d_corpus, compute_efo, exact_match_score, extract_letter, forgetting,
    normalize_answer, parse_yes_no, specialization, tokenize_caption, vqa_score,
)


def _sample(i: int, answers: list[str], choices: list[str] | None = None, **meta) -> Sample:
    return Sample(uid=f"t/test/{i}", task="t", images=[], question="q?", answers=answers,
                  choices=choices or [], meta=meta)


# ---------------------------------------------------------------- normalization
@pytest.mark.parametrize("raw, expected", [
    ("Two.", "2"),                 # number word -> digit, trailing period stripped
    ("none", "0"),
    ("The Dog!", "dog"),           # lowercase, article, "!" next to nothing -> replaced by space
    ("  An   apple  ", "apple"),   # article and extra spaces
    ("dont", "don't"),             # official contraction table
    ("1,000", "1000"),             # digit-comma-digit: punctuation deleted, not spaced
    ("3.5", "3.5"),                # a period before a digit stays
    ("red-white", "red white"),    # "-" not next to a space -> space
    ("yes - no", "yes no"),        # "-" next to a space -> deleted
    ("", ""),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


# The documented differences between the official VQA normalizer (default) and lmms-eval's
# EvalAIAnswerProcessor (style="lmms-eval"); expected values derived by hand from both scripts.
@pytest.mark.parametrize("raw, official, lmms_eval", [
    ("man's", "man's", "man 's"),            # lmms-eval splits off 's
    ("It's red", "it's red", "it 's red"),
    ("red,blue", "red blue", "redblue"),      # lmms-eval deletes , and ? outright
    ("what?no", "what no", "whatno"),
    ("1,000-yard", "1000yard", "1000 yard"),  # official: a number comma deletes every mark
    # Identical otherwise:
    ("Two.", "2", "2"), ("The Dog!", "dog", "dog"), ("dont", "don't", "don't"),
    ("1,000", "1000", "1000"), ("3.5", "3.5", "3.5"), ("red-white", "red white", "red white"),
    ("yes, it is", "yes it is", "yes it is"), ("What?", "what", "what"),
])
def test_normalize_answer_styles(raw, official, lmms_eval):
    assert normalize_answer(raw) == official
    assert normalize_answer(raw, style="vqa") == official
    assert normalize_answer(raw, style="lmms-eval") == lmms_eval


def test_vqa_score_lmms_eval_style():
    refs = ["man's hat"] * 3 + ["hat"] * 7
    assert vqa_score("man 's hat", refs) == 0.0          # official keeps "man's"
    assert vqa_score("man 's hat", refs, style="lmms-eval") == 0.9


def test_normalize_answer_period_quirk_and_unknown_style():
    # Both scripts pass re.UNICODE (32) as the count of the period regex: at most 32 removed.
    assert normalize_answer("x." * 40) == ("x" * 32 + "x." * 8)
    assert normalize_answer("x." * 40, style="lmms-eval") == ("x" * 32 + "x." * 8)
    with pytest.raises(ValueError, match="style"):
        normalize_answer("a", style="mmf")


def test_tokenize_caption_keeps_articles_and_number_words():
    assert tokenize_caption("A man's two dogs, running.") == ["a", "mans", "two", "dogs", "running"]


# ---------------------------------------------------------------- exact match
def test_exact_match_values():
    assert exact_match_score("Two", ["2"]) == 1.0          # "2" == "two"
    assert exact_match_score("the cat.", ["x", "Cat"]) == 1.0  # any reference
    assert exact_match_score("cats", ["cat"]) == 0.0
    assert exact_match_score("", ["a"]) == 0.0             # "a" normalizes to "" too: no credit
    samples = [_sample(i, [a]) for i, a in enumerate(["yes", "2", "red", "dog"])]
    out = METRICS.get("exact_match").compute(["Yes.", "two", "blue", ""], samples)
    assert out["score"] == 50.0                            # 2 of 4


# ---------------------------------------------------------------- option letter
CHOICES = ["red", "blue", "green"]


@pytest.mark.parametrize("pred, letter", [
    ("B", "B"), ("(B)", "B"), ("b", "B"), ("B.", "B"), ("B)", "B"),
    ("The answer is B", "B"), ("B) blue", "B"), ("(c) green", "C"), ("Answer: (c)", "C"),
    ("the answer is b.", "B"), ("Blue", "B"),               # equal to a choice's text
    ("I think C", "C"),                                      # "I" is the pronoun
    ("The answer is a color", None),                         # "a" is the article here
    ("", None), ("   ", None), ("purple", None),
    ("B or C", None),                                        # ambiguous: two candidates
])
def test_extract_letter(pred, letter):
    assert extract_letter(pred, CHOICES) == letter


def test_extract_letter_choice_text_after_normalization():
    # "A cat" normalizes to "cat" (article dropped), which is choice B's text.
    assert extract_letter("A cat", ["dog", "cat"]) == "B"
    assert extract_letter("A cat", ["dog", "cow"]) is None


def test_option_letter_metric():
    samples = [_sample(i, [a], CHOICES) for i, a in enumerate("ABCA")]
    out = METRICS.get("option_letter").compute(["(A)", "green", "C.", "no idea"], samples)
    # right, wrong ("green" -> C, answer B), right, unparsed -> 2/4 right, 3/4 parsed
    assert out == {"score": 50.0, "parsed": 75.0}


# ---------------------------------------------------------------- VQA accuracy
@pytest.mark.parametrize("m, expected", [
    # m of 10 annotators gave the predicted answer. Leave-one-out: 10 - m subsets drop a
    # non-matching answer (m matches left), m subsets drop a matching one (m - 1 left):
    (0, 0.0),   # 0
    (1, 0.3),   # (9 * min(1, 1/3) + 1 * 0) / 10 = 3/10
    (2, 0.6),   # (8 * 2/3 + 2 * 1/3) / 10 = (16/3 + 2/3) / 10 = 6/10
    (3, 0.9),   # (7 * 1 + 3 * 2/3) / 10 = 9/10
    (4, 1.0),   # (6 * 1 + 4 * 1) / 10
    (10, 1.0),
])
def test_vqa_leave_one_out_exact(m, expected):
    refs = ["two"] * m + ["three"] * (10 - m)
    assert vqa_score("2", refs) == expected  # exact, after "two" -> "2"


def test_vqa_single_reference_is_exact_match_and_metric():
    assert vqa_score("Two.", ["2"]) == 1.0
    assert vqa_score("three", ["2"]) == 0.0
    assert vqa_score("", ["2"] * 10) == 0.0
    samples = [_sample(0, ["yes"] * 3 + ["no"] * 7), _sample(1, ["dog"])]
    out = METRICS.get("vqa_accuracy").compute(["yes", "the dog"], samples)
    assert out["score"] == pytest.approx(100 * (0.9 + 1.0) / 2, abs=1e-12)


# ---------------------------------------------------------------- CIDEr-D
def test_cider_d_hand_derived():
    # N = 2 images, L = log 2. df("a") = 2 -> idf 0; every other reference n-gram has df 1 -> L;
    # candidate n-grams absent from all references have df 0 -> max(1, 0) = 1 -> idf L.
    # Image 2: candidate == reference "a cat sits": orders 1-3 have cosine 1, order 4 is empty (0);
    #   no length penalty: 10 * (1 + 1 + 1 + 0) / 4 = 7.5.
    # Image 1: "a dog dog runs" (4 tokens) vs "a dog runs" (3): penalty exp(-1 / (2 * 6^2)).
    #   1-grams c = {a: 0, dog: 2L, runs: L}, |c| = L*sqrt(5); r = {a: 0, dog: L, runs: L},
    #   |r| = L*sqrt(2); clipped dot = min(2L, L)*L + L*L = 2L^2 -> 2/sqrt(10)
    #   (unclipped CIDEr would give 3/sqrt(10)).
    #   2-grams c = {a dog, dog dog, dog runs} all L; r = {a dog, dog runs}:
    #   2L^2 / (L*sqrt(3) * L*sqrt(2)) = 2/sqrt(6).
    #   3-grams share nothing; r has no 4-gram (zero norm) -> 0.
    img1 = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 2 / math.sqrt(6)) / 4  # = 3.57241721...
    mean, per_image = cider_d_corpus(["a dog dog runs", "a cat sits"],
                                     [["a dog runs"], ["a cat sits"]])
    assert per_image == pytest.approx([img1, 7.5], abs=1e-9)
    assert mean == pytest.approx((img1 + 7.5) / 2, abs=1e-9)
    # pycocoevalcap 1.2 CiderScorer (run outside this suite, same pre-tokenized strings) gave
    # 5.536208607029588 with per-image [3.5724172140591737, 7.500000000000001].
    assert mean == pytest.approx(5.536208607029588, abs=1e-9)


def test_cider_d_matches_pycocoevalcap_reference_values():
    # Reference values from pycocoevalcap 1.2 (pip wheel, pycocoevalcap/cider/cider_scorer.py,
    # CiderScorer(n=4, sigma=6.0), which has the clipping and Gaussian penalty of CIDEr-D), fed
    # the captions below joined after tokenize_caption (bypassing its Java PTB tokenizer).
    # It is not a dependency of this project; the values are recorded here as literals.
    cands = ["a man rides a horse", "two dogs play in the snow", "a red car"]
    refs = [["a man rides a brown horse", "a man is riding a horse"],
            ["two dogs playing in snow", "dogs run in the snow", "two dogs in the snow"],
            ["a red car parked on the street", "a red car"]]
    mean, per_image = cider_d_corpus(cands, refs)
    assert per_image == pytest.approx(
        [4.463589428085446, 3.522508038111485, 5.412622270578645], abs=1e-9)
    assert mean == pytest.approx(4.4662399122585255, abs=1e-9)
    samples = [_sample(i, r) for i, r in enumerate(refs)]
    out = METRICS.get("cider_d").compute(cands, samples)
    assert out["cider_d"] == pytest.approx(4.4662399122585255, abs=1e-9)
    assert out["score"] == pytest.approx(446.62399122585255, abs=1e-7)  # x100 convention


def test_cider_d_single_image_is_zero_hence_whole_set():
    # One image: N = 1 and df = 1 for every reference n-gram, so idf = log 1 - log 1 = 0.
    assert cider_d_corpus(["a red car"], [["a red car"]]) == (0.0, [0.0])
    # The same perfect caption inside a set of two distinct images scores > 0.
    mean, per_image = cider_d_corpus(["a red car", "a dog"], [["a red car"], ["two cats sleep"]])
    assert per_image[0] > 0 and per_image[1] == 0.0 and mean > 0


def test_cider_d_edge_cases():
    mean, per_image = cider_d_corpus(["", "A dog."], [["a red car"], ["a dog"]])
    assert per_image[0] == 0.0 and per_image[1] > 0  # empty caption; punctuation/case ignored
    with pytest.raises(ValueError, match="reference"):
        cider_d_corpus(["x", "y"], [["x"], []])


# ---------------------------------------------------------------- MME
def test_mme_acc_and_acc_plus():
    samples = [
        _sample(0, ["Yes"], category="color", pair="p1"),
        _sample(1, ["No"], category="color", pair="p1"),
        _sample(2, ["Yes"], category="color", pair="p2"),
        _sample(3, ["No"], category="color", pair="p2"),
        _sample(4, ["Yes"], category="count", pair="p1"),  # same pair id, other category
        _sample(5, ["No"], category="count", pair="p1"),
    ]
    preds = ["yes", "No.", "Yes, it is.", "yes", "no", ""]
    out = METRICS.get("mme").compute(preds, samples)
    # color: 3/4 questions right -> acc 75; pair p1 both right, p2 not -> acc+ 50.
    # count: 0/2 right (empty answer is unparsed) -> acc 0, acc+ 0.
    assert out["acc/color"] == 75.0 and out["acc_plus/color"] == 50.0
    assert out["acc/count"] == 0.0 and out["acc_plus/count"] == 0.0
    assert out["perception"] == 125.0          # (75 + 50) + (0 + 0), official sum
    assert out["score"] == 31.25               # mean of (125/2, 0/2)
    assert out["acc"] == 37.5 and out["acc_plus"] == 25.0
    assert "cognition" not in out


def test_mme_cognition_split_and_errors():
    samples = [_sample(0, ["yes"], category="code_reasoning", pair=0),
               _sample(1, ["no"], category="code_reasoning", pair=0),
               _sample(2, ["yes"], category="scene", pair=0),
               _sample(3, ["no"], category="scene", pair=0)]
    out = METRICS.get("mme").compute(["yes", "no", "no", "no"], samples)
    assert out["cognition"] == 200.0 and out["perception"] == 50.0 + 0.0
    assert out["score"] == pytest.approx((100.0 + 25.0) / 2)
    assert parse_yes_no("Yes, there is") == "yes" and parse_yes_no("Maybe yes") is None
    with pytest.raises(ValueError, match="pair"):
        METRICS.get("mme").compute(["yes"], [_sample(0, ["yes"], category="scene")])


# ---------------------------------------------------------------- E / F / O
def test_efo_known_values():
    base = {"sqa": 40.0, "okvqa": 50.0, "gqa": 30.0, "unused": 1.0}
    tuned = {"sqa": 70.0, "okvqa": 45.0, "gqa": 28.0}
    out = compute_efo(base, tuned, "sqa", ["okvqa", "gqa"])
    # E = 70 - 40 = 30; dF = 45 - 50 = -5 and 28 - 30 = -2; F = -3.5; O = 26.5
    assert out == {"E": 30.0, "F": -3.5, "O": 26.5, "dF/okvqa": -5.0, "dF/gqa": -2.0}
    assert specialization(55.5, 50.0) == 5.5
    assert forgetting({"a": 10.0, "b": 20.0}, {"a": 12.0, "b": 14.0}) == 2.0


def test_efo_errors():
    base = {"sqa": 40.0, "okvqa": 50.0}
    with pytest.raises(ValueError, match="tuned scores lack.*okvqa"):
        compute_efo(base, {"sqa": 1.0}, "sqa", ["okvqa"])
    with pytest.raises(ValueError, match="base scores lack.*gqa"):
        compute_efo(base, {"sqa": 1.0, "okvqa": 2.0, "gqa": 3.0}, "sqa", ["okvqa", "gqa"])
    with pytest.raises(ValueError, match="no upstream"):
        compute_efo(base, base, "sqa", [])
    with pytest.raises(ValueError, match="also listed as upstream"):
        compute_efo(base, base, "sqa", ["okvqa", "sqa"])
    with pytest.raises(ValueError, match="differ"):
        forgetting({"a": 1.0}, {"b": 1.0})


# ---------------------------------------------------------------- contract over the registry
# One row per registered metric: (samples, good predictions, bad predictions).
_MC = ["red", "blue"]
CONTRACT = {
    "exact_match": ([_sample(0, ["red"]), _sample(1, ["2"])], ["red", "two"], ["blue", "3"]),
    "option_letter": ([_sample(0, ["A"], _MC), _sample(1, ["B"], _MC)], ["A", "(B)"], ["B", "A"]),
    "vqa_accuracy": ([_sample(0, ["red"] * 10), _sample(1, ["2"])], ["red", "two"], ["no", "1"]),
    "cider_d": ([_sample(0, ["a red car"]), _sample(1, ["two dogs run"])],
                ["a red car", "two dogs run"], ["two dogs run", "a red car"]),
    "mme": ([_sample(0, ["yes"], category="scene", pair=0),
             _sample(1, ["no"], category="scene", pair=0)], ["yes", "no"], ["no", "yes"]),
}


def test_every_metric_has_a_contract_row():
    assert set(METRICS.names()) == set(CONTRACT)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_metric_contract(name):
    metric = METRICS.get(name)
    assert metric.name == name
    assert isinstance(metric.higher_is_better, bool)
    assert metric.aggregation in ("mean", "corpus") and metric.description
    samples, good, bad = CONTRACT[name]
    hi, lo = metric.compute(good, samples), metric.compute(bad, samples)
    for out in (hi, lo):
        assert "score" in out and all(isinstance(v, float) for v in out.values())
        assert all(math.isfinite(v) and v >= 0 for v in out.values())
    assert (hi["score"] > lo["score"]) == metric.higher_is_better
    with pytest.raises(ValueError):
        metric.compute(good[:1], samples)  # misaligned
    with pytest.raises(ValueError):
        metric.compute([], [])


def test_unknown_metric_names_choices():
    with pytest.raises(UserError, match="exact_match"):
        METRICS.get("exact_macth")
