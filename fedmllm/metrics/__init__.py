"""Metrics: one module per metric, each registered in `METRICS` when this package is imported.

``METRICS.get(name).compute(predictions, samples)`` returns ``{"score": percent, ...sub-scores}``.
E/F/O of a tuned model are in `fedmllm.metrics.efo`; the official (PTB) caption tokenization of
CIDEr-D, in pure Python, is in `fedmllm.metrics.ptb`.
"""

from __future__ import annotations

from fedmllm.metrics.base import METRICS, ComputeFn, Metric, register_metric
from fedmllm.metrics.normalize import check_aligned, normalize_answer, tokenize_caption
from fedmllm.metrics.ptb import ptb_caption_strings, ptb_lex, ptb_tokenize

# Importing a metric module registers its metric (one file, one registration).
from fedmllm.metrics import cider_d, exact_match, mme, option_letter, vqa_accuracy  # noqa: F401
from fedmllm.metrics.cider_d import cider_d as cider_d_corpus
from fedmllm.metrics.efo import efo as compute_efo, forgetting, specialization
from fedmllm.metrics.exact_match import exact_match_score
from fedmllm.metrics.mme import parse_yes_no
from fedmllm.metrics.option_letter import extract_letter
from fedmllm.metrics.vqa_accuracy import vqa_score

__all__ = [
    "METRICS", "ComputeFn", "Metric", "register_metric",
    "check_aligned", "normalize_answer", "tokenize_caption",
    "ptb_caption_strings", "ptb_lex", "ptb_tokenize",
    "cider_d_corpus", "compute_efo", "forgetting", "specialization",
    "exact_match_score", "parse_yes_no", "extract_letter", "vqa_score",
]
