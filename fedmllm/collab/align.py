"""Token alignment between two vocabularies, so top-k logits can move from one model to another.

The large server model speaks WordPiece (``##`` continuation pieces), the small clients a
word-level vocabulary, so a teacher's top-k at one tokenization's positions must be carried to the
other's positions and ids. We follow FedMKT (Fan et al. 2024, "FedMKT: Federated Mutual Knowledge
Transfer for Large and Small Language Models", Sec. 3.2, after FuseLLM's token alignment):

- positions: a monotone dynamic-time-warping path between the two tokenizations of the same
  text, the cost of a pair being the edit distance of the two strings (`align_tokens`); only
  one-to-one pairs carry logits (`one_to_one`);
- ids: each source token maps to the destination token with the same string, else to its
  ``##``-twin, else to the one of minimum edit distance (`vocab_map`); proxy-tuning, which adds
  logit deltas id by id, uses exact matches only (`exact_map`).
"""

from __future__ import annotations

import numpy as np

PIECE = "##"  # WordPiece's continuing-subword prefix (fedmllm.models.tokenizer)


def strip_piece(token: str) -> str:
    """``token`` without a leading ``##``."""
    return token[len(PIECE):] if token.startswith(PIECE) else token


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit-cost insert, delete, substitute)."""
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _tokens(tok) -> list[str]:
    """Every id's token string, id order (``len(tok)`` includes added tokens)."""
    return tok.convert_ids_to_tokens(list(range(len(tok))))


def exact_map(src_tok, dst_tok) -> np.ndarray:
    """For each ``src_tok`` id the ``dst_tok`` id of the same token string, ``-1`` where there is
    none (special tokens included: ``<|im_end|>`` maps to ``<|im_end|>``)."""
    dst_vocab = dst_tok.get_vocab()
    return np.array([dst_vocab.get(t, -1) for t in _tokens(src_tok)], dtype=np.int64)


def vocab_map(src_tok, dst_tok) -> np.ndarray:
    """For each ``src_tok`` id a ``dst_tok`` id (int64, length ``len(src_tok)``).

    In order: the same string (special tokens too); a ``##x`` piece to the word ``x`` (a word
    ``x`` to the piece ``##x``); else the non-special destination token of minimum edit distance,
    ``##`` stripped on both sides, ties to the lowest id. A special token the destination lacks
    maps to its ``<unk>``.
    """
    dst_vocab = dst_tok.get_vocab()
    dst_specials = set(dst_tok.all_special_tokens)
    src_specials = set(src_tok.all_special_tokens)
    candidates = sorted((i, strip_piece(t)) for t, i in dst_vocab.items() if t not in dst_specials)
    if not candidates:
        raise ValueError("vocab_map: the destination vocabulary has no non-special tokens")
    out = np.empty(len(src_tok), dtype=np.int64)
    for i, token in enumerate(_tokens(src_tok)):
        twin = strip_piece(token) if token.startswith(PIECE) else PIECE + token
        if token in dst_vocab:
            out[i] = dst_vocab[token]
        elif token in src_specials:
            if dst_tok.unk_token_id is None:
                raise ValueError(f"vocab_map: special token {token!r} is not in the destination "
                                 "vocabulary, which has no unk token to map it to")
            out[i] = dst_tok.unk_token_id
        elif twin in dst_vocab:
            out[i] = dst_vocab[twin]
        else:
            bare = strip_piece(token)
            # min over (distance, id): ties go to the lowest id.
            out[i] = min(candidates, key=lambda c: (edit_distance(bare, c[1]), c[0]))[0]
    return out


def align_tokens(src: list[str], dst: list[str]) -> list[tuple[int, int]]:
    """Monotone DTW path between two tokenizations of the same text.

    The cost of pairing ``src[i]`` with ``dst[j]`` is their edit distance, ``##`` stripped, divided
    by the longer string's length (raw distances let a short word next to a split one take its
    first piece: "is" / "at" costs 2, "attract" / "at" 5; normalized 1.0 against 0.71). The
    path runs from ``(0, 0)`` to ``(len(src) - 1, len(dst) - 1)`` by steps of ``(1, 1)``,
    ``(1, 0)`` or ``(0, 1)`` and minimises the summed cost; on equal cost the backtrack prefers
    the diagonal step, then ``(1, 0)``. Empty input gives an empty path.
    """
    n, m = len(src), len(dst)
    if n == 0 or m == 0:
        return []
    cost = np.array([[_normalized(strip_piece(a), strip_piece(b)) for b in dst] for a in src],
                    dtype=np.float64)
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    path = []
    i, j = n, m
    while True:
        path.append((i - 1, j - 1))
        if i == 1 and j == 1:
            break
        steps = ((acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j), (acc[i, j - 1], i, j - 1))
        # min() keeps the first of equal costs: diagonal, then (1, 0), then (0, 1).
        _, i, j = min(steps, key=lambda s: s[0])
    return path[::-1]


def _normalized(a: str, b: str) -> float:
    return edit_distance(a, b) / max(len(a), len(b), 1)


def one_to_one(path: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs of ``path`` whose source index and destination index each occur once on it."""
    src_count: dict[int, int] = {}
    dst_count: dict[int, int] = {}
    for i, j in path:
        src_count[i] = src_count.get(i, 0) + 1
        dst_count[j] = dst_count.get(j, 0) + 1
    return [(i, j) for i, j in path if src_count[i] == 1 and dst_count[j] == 1]


def transfer_topk(ids: np.ndarray, values: np.ndarray, pairs: list[tuple[int, int]],
                  vmap: np.ndarray, dst_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move a teacher's top-k from source positions to destination positions and ids.

    Args:
        ids, values: (src_len, k) top-k ids (source vocabulary) and logits per source position.
        pairs: (src position, dst position) pairs, e.g. ``one_to_one(align_tokens(...))``.
        vmap: source id -> destination id (`vocab_map`).
        dst_len: number of destination positions.

    Returns ``(dst_ids, dst_values, mask)`` of shapes (dst_len, k), (dst_len, k), (dst_len,). Ids
    go through ``vmap``; slots whose ids land on the same destination id merge into the first of
    them (log-sum-exp of their logits, so their softmax mass adds up) and the others get ``-inf``.
    Positions without a pair have ``mask`` False and ids / values 0.
    """
    ids, values, vmap = np.asarray(ids), np.asarray(values), np.asarray(vmap)
    if ids.shape != values.shape or ids.ndim != 2:
        raise ValueError(f"transfer_topk: ids {ids.shape} and values {values.shape} must be the same (L, k)")
    k = ids.shape[1]
    dst_ids = np.zeros((dst_len, k), dtype=np.int64)
    dst_values = np.zeros((dst_len, k), dtype=np.float32)
    mask = np.zeros(dst_len, dtype=bool)
    for i, j in pairs:
        if not (0 <= i < len(ids) and 0 <= j < dst_len):
            raise ValueError(f"transfer_topk: pair ({i}, {j}) is outside ({len(ids)}, {dst_len}) positions")
        dst_ids[j], dst_values[j] = _merge(vmap[ids[i]], values[i].astype(np.float32))
        mask[j] = True
    return dst_ids, dst_values, mask


def _merge(mapped: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge the slots of equal mapped ids into the first one (log-sum-exp); the rest -> -inf."""
    out = vals.copy()
    for slot, dst_id in enumerate(mapped):
        same = np.flatnonzero(mapped == dst_id)
        if same[0] == slot and len(same) > 1:
            out[slot] = np.logaddexp.reduce(vals[same])
            out[same[1:]] = -np.inf
    return mapped.astype(np.int64), out
