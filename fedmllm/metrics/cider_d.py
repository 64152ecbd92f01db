"""CIDEr-D (Vedantam et al., CVPR 2015, "CIDEr: Consensus-based Image Description Evaluation").

For candidate c_i of image i with references S_i = {s_i1..s_im}, and n-gram order n = 1..4:

    g_k(s)      = h_k(s) * log(N / df_k)      tf-idf of n-gram k; h_k = raw count in s,
                                              N = number of images in the evaluated set,
                                              df_k = number of images whose references
                                              contain k (0 -> 1 for unseen n-grams)
    CIDEr-D_n   = 10/m * sum_j exp(-(l(c) - l(s_ij))^2 / (2 sigma^2))
                          * sum_k min(g_k(c), g_k(s_ij)) * g_k(s_ij) / (||g(c)|| ||g(s_ij)||)
    CIDEr-D     = mean over n of CIDEr-D_n,     sigma = 6, l = length in tokens

and the set's score is the mean over images. This follows the reference implementation
(``cider_scorer.py`` of coco-caption / pycocoevalcap by Vedantam and Lin): raw counts as tf (the
paper writes normalized tf; cosine similarity is unchanged but clipping is on raw tf-idf), norms of
the unclipped vectors, and a zero similarity when either vector is zero. The idf comes from the
references of the evaluated set itself, so the whole set must be scored at once: a single image has
N = df = 1 for every n-gram, idf 0, and scores 0. ``score`` is CIDEr-D x 100 (DESIGN.md percent
convention); ``cider_d`` keeps the raw value.

Tokenization is the official one by default (``tokenizer="ptb"``): pycocoevalcap's PTBTokenizer
(Stanford CoreNLP's PTB tokenizer, lowercased, punctuation tokens dropped), reproduced in pure
Python by `fedmllm.metrics.ptb`, run like pycocoevalcap over all references of the set as one
stream and all candidates as another, in sample order (lmms-eval's order). With it the scores equal
the official coco-caption CIDEr-D (tests/fixtures/ptb/). The same tokenizer serves the real caption
sets and their synthetic twins: the twins' references (plain words and punctuation) tokenize identically under both
tokenizers, so one code path scores both and a twin's model output is treated as a real one would
be. ``tokenizer="simple"`` keeps the earlier `tokenize_caption` (lowercase, punctuation stripped,
"man's" -> "mans"), which is not comparable with published numbers.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from functools import lru_cache

from fedmllm.data.record import Sample
from fedmllm.metrics.base import Metric, register_metric
from fedmllm.metrics.normalize import check_aligned, tokenize_caption
from fedmllm.metrics.ptb import ptb_caption_strings

N_MAX = 4
SIGMA = 6.0

NGram = tuple[str, ...]


def ngram_counts(tokens: list[str], n_max: int = N_MAX) -> Counter:
    """Counts of every n-gram of ``tokens`` for n = 1..n_max."""
    return Counter(tuple(tokens[i:i + n]) for n in range(1, n_max + 1)
                   for i in range(len(tokens) - n + 1))


def _tfidf(counts: Counter, df: dict[NGram, int], log_n: float, n_max: int):
    """Per order n: the tf-idf vector (dict) and its Euclidean norm."""
    vecs: list[dict[NGram, float]] = [{} for _ in range(n_max)]
    for gram, tf in counts.items():
        vecs[len(gram) - 1][gram] = tf * (log_n - math.log(max(1, df.get(gram, 0))))
    norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vecs]
    return vecs, norms


def _similarity(cand, ref, delta: int, sigma: float, n_max: int) -> list[float]:
    """Clipped cosine similarity per order n, times the Gaussian length penalty."""
    (c_vecs, c_norms), (r_vecs, r_norms) = cand, ref
    penalty = math.exp(-(delta ** 2) / (2.0 * sigma ** 2))
    sims = []
    for n in range(n_max):
        if c_norms[n] == 0.0 or r_norms[n] == 0.0:
            sims.append(0.0)
            continue
        r_vec = r_vecs[n]
        dot = sum(min(v, r_vec.get(g, 0.0)) * r_vec.get(g, 0.0) for g, v in c_vecs[n].items())
        sims.append(dot / (c_norms[n] * r_norms[n]) * penalty)
    return sims


TOKENIZERS = ("ptb", "simple")


@lru_cache(maxsize=16)
def _ptb_stream(captions: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Tokens of each caption of one side, tokenized as one pycocoevalcap stream (cached: the
    same references are scored again every evaluation round)."""
    return tuple(tuple(s.split()) for s in ptb_caption_strings(captions))


def tokenize_side(captions: list[str], tokenizer: str = "ptb") -> list[list[str]]:
    """CIDEr tokens of one side's captions (all references, or all candidates, in order)."""
    if tokenizer == "ptb":
        out = [list(t) for t in _ptb_stream(tuple(str(c) for c in captions))]
        # A caption ending in "\r" merges with the next line break, so the stream has a line less
        # (pycocoevalcap then drops the last caption); the missing ones count as empty here.
        return out + [[] for _ in range(len(captions) - len(out))]
    if tokenizer == "simple":
        return [tokenize_caption(c) for c in captions]
    raise ValueError(f"cider_d: unknown tokenizer {tokenizer!r}; valid: {', '.join(TOKENIZERS)}")


def cider_d(candidates: list[str], references: list[list[str]], n_max: int = N_MAX,
            sigma: float = SIGMA, tokenizer: str = "ptb") -> tuple[float, list[float]]:
    """CIDEr-D of a whole set: (mean over images, per-image scores). Not multiplied by 100.

    ``candidates[i]`` is the caption generated for image i, ``references[i]`` its reference
    captions. ``tokenizer="ptb"`` (default) tokenizes as the official evaluation does (all
    references as one PTB stream, all candidates as another); ``"simple"`` uses
    `tokenize_caption`.
    """
    if len(candidates) != len(references):
        raise ValueError(f"cider_d: {len(candidates)} candidates for {len(references)} images")
    if not candidates:
        raise ValueError("cider_d: nothing to score (0 images)")
    if any(not refs for refs in references):
        raise ValueError("cider_d: every image needs at least one reference caption")
    flat = tokenize_side([r for refs in references for r in refs], tokenizer)
    ref_tokens, start = [], 0
    for refs in references:
        ref_tokens.append(flat[start:start + len(refs)])
        start += len(refs)
    cand_tokens = tokenize_side(list(candidates), tokenizer)
    ref_counts = [[ngram_counts(t, n_max) for t in refs] for refs in ref_tokens]
    df: dict[NGram, int] = defaultdict(int)
    for counts in ref_counts:  # document frequency: images whose references contain the n-gram
        for gram in set().union(*counts):
            df[gram] += 1
    log_n = math.log(max(1, len(candidates)))
    scores = []
    for c_tokens, refs, counts in zip(cand_tokens, ref_tokens, ref_counts):
        c_vec = _tfidf(ngram_counts(c_tokens, n_max), df, log_n, n_max)
        total = [0.0] * n_max
        for r_tokens, r_counts in zip(refs, counts):
            r_vec = _tfidf(r_counts, df, log_n, n_max)
            sims = _similarity(c_vec, r_vec, len(c_tokens) - len(r_tokens), sigma, n_max)
            total = [t + s for t, s in zip(total, sims)]
        scores.append(10.0 * sum(total) / n_max / len(refs))
    return sum(scores) / len(scores), scores


def compute(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """``score``: CIDEr-D x 100 over the whole set; ``cider_d``: the raw CIDEr-D."""
    check_aligned(predictions, samples, "cider_d")
    mean, _ = cider_d(predictions, [s.answers for s in samples])
    return {"score": 100.0 * mean, "cider_d": mean}


METRIC = register_metric(Metric(
    name="cider_d",
    higher_is_better=True,
    compute=compute,
    aggregation="corpus",
    description="CIDEr-D (sigma 6, clipped, x10) with idf over the evaluated set, official PTB "
                "tokenization, x100",
))
