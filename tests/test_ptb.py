"""The pure-Python PTB tokenizer and CIDEr-D against the official Java pipeline.

The fixtures in tests/fixtures/ptb/ were written once by make_fixtures.py with pycocoevalcap 1.2
and its stanford-corenlp-3.4.1.jar (Java); these tests need neither.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fedmllm.data.synth  # noqa: F401  (registers the twins)
from fedmllm.data.record import Sample
from fedmllm.data.registry import TASKS
from fedmllm.metrics import METRICS, cider_d_corpus, tokenize_caption
from fedmllm.metrics.ptb import PUNCTUATIONS, ptb_caption_strings, ptb_lex, ptb_tokenize

FIXTURES = Path(__file__).parent / "fixtures" / "ptb"
TOKENIZER = json.loads((FIXTURES / "tokenizer.json").read_text(encoding="utf-8"))
CIDER = json.loads((FIXTURES / "cider.json").read_text(encoding="utf-8"))
CASES = TOKENIZER["cases"]
TEXTS = [c["text"] for c in CASES]


def test_fixtures_are_large_and_from_the_official_jar():
    assert len(CASES) >= 300
    assert TOKENIZER["provenance"]["jar"] == "stanford-corenlp-3.4.1.jar"
    assert sum(len(s["images"]) for s in CIDER["sets"].values()) >= 40


@pytest.mark.parametrize("case", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_tokenizer_equals_java_on_every_caption(case):
    # The tool's raw output (punctuation tokens included) and pycocoevalcap's tokenized string.
    assert ptb_lex(case["text"]) == case["java"]
    assert ptb_caption_strings([case["text"]]) == [case["ptb"]]
    assert ptb_tokenize(case["text"]) == case["ptb"].split()


def test_tokenizer_equals_java_on_the_joined_stream():
    # All captions as one side of an evaluation: context crosses caption boundaries.
    assert ptb_lex("\n".join(TEXTS)) == TOKENIZER["stream_java"]
    assert ptb_caption_strings(TEXTS) == TOKENIZER["stream_ptb"]


@pytest.mark.parametrize("name", sorted(CIDER["sets"]))
def test_cider_d_equals_official_values(name):
    images, official = CIDER["sets"][name]["images"], CIDER["sets"][name]["official"]
    candidates = [im["candidate"] for im in images]
    references = [im["references"] for im in images]
    mean, per_image = cider_d_corpus(candidates, references)
    assert abs(mean - official["cider_d"]) < 1e-6
    assert max(abs(a - b) for a, b in zip(per_image, official["per_image"])) < 1e-6
    assert len(per_image) == len(official["per_image"])
    # Same tokens as the official pipeline, side by side.
    flat = [r for refs in references for r in refs]
    assert ptb_caption_strings(flat) == [r for refs in official["references_tokenized"]
                                         for r in refs]
    assert ptb_caption_strings(candidates) == official["candidates_tokenized"]
    # Through the metric registry, on samples (score = CIDEr-D x 100).
    samples = [Sample(uid=f"coco-caption/test/{im['image_id']}", task="coco-caption", images=[],
                      question="q", answers=im["references"]) for im in images]
    out = METRICS.get("cider_d").compute(candidates, samples)
    assert abs(out["cider_d"] - official["cider_d"]) < 1e-6
    assert abs(out["score"] - 100 * official["cider_d"]) < 1e-4


def test_simple_tokenizer_is_not_the_official_one():
    # Why the default changed: the earlier tokenizer ("woman's" -> "womans") is points away.
    images = CIDER["sets"]["first_candidates"]["images"]
    official = CIDER["sets"]["first_candidates"]["official"]["cider_d"]
    simple, _ = cider_d_corpus([im["candidate"] for im in images],
                               [im["references"] for im in images], tokenizer="simple")
    assert abs(simple - official) * 100 > 1.0
    with pytest.raises(ValueError, match="tokenizer"):
        cider_d_corpus(["a"], [["a"]], tokenizer="nltk")


# ---------------------------------------------------------------- documented behaviours
@pytest.mark.parametrize("text, tokens", [
    ("A woman's dog isn't running.", ["a", "woman", "'s", "dog", "is", "n't", "running"]),
    ("They cannot, but they're gonna.", ["they", "can", "not", "but", "they", "'re", "gon",
                                         "na"]),
    ("A black-and-white t-shirt", ["a", "black-and-white", "t-shirt"]),
    ('A sign that says "STOP".', ["a", "sign", "that", "says", "stop"]),
    ("A man (left) [x] {y}", ["a", "man", "-lrb-", "left", "-rrb-", "-lsb-", "x", "-rsb-",
                              "-lcb-", "y", "-rcb-"]),
    ("It costs $1,000.50 or 5%", ["it", "costs", "$", "1,000.50", "or", "5", "%"]),
    ("Mr. Smith in the U.S.", ["mr.", "smith", "in", "the", "u.s."]),
    ("Wait... what?!", ["wait", "what", "?!"]),
    ("A dog 😀 on a café's mat", ["a", "dog", "on", "a", "café", "'s", "mat"]),
    ("1 1/2 cups", ["1", "1/2", "cups"]),  # one PTB token "1\u00a01/2", split by CIDEr
    ("AT&T and A & W", ["at&t", "and", "a", "&", "w"]),
])
def test_documented_tokens(text, tokens):
    assert ptb_tokenize(text) == tokens


def test_context_crosses_captions_like_pycocoevalcap():
    # "U.S." before a capitalized caption gets an extra period (then dropped as punctuation);
    # "No." before a caption starting with a digit stays an abbreviation.
    assert ptb_lex("In the U.S.\nThe end") == "in the u.s. .\nthe end"
    assert ptb_lex("In the U.S.\nthe end") == "in the u.s.\nthe end"
    assert ptb_caption_strings(["Bus No.", "5 stops"]) == ["bus no.", "5 stops"]
    assert ptb_caption_strings(["Bus No."]) == ["bus no"]
    # A "\r" in a caption adds an output line: later captions shift, as in the original.
    assert ptb_caption_strings(["a\rb", "c"]) == ["a", "b"]


def test_punctuation_list_is_pycocoevalcaps():
    assert "." in PUNCTUATIONS and "-LRB-" in PUNCTUATIONS and "-lrb-" not in PUNCTUATIONS
    assert len(PUNCTUATIONS) == 17


@pytest.mark.parametrize("twin", ["synth-coco-caption", "synth-flickr30k"])
def test_twin_references_tokenize_the_same_either_way(twin):
    # The caption twins use the official tokenizer too; their references (plain words, commas,
    # colons) give the same tokens as the earlier simple tokenizer, so twin scores are unchanged by the switch.
    samples = TASKS.get(twin).load(split="test", n=40, seed=0)
    refs = [r for s in samples for r in s.answers]
    assert [ptb_tokenize(r) for r in refs] == [tokenize_caption(r) for r in refs]
