"""Unit tests of the edge-collaboration maths: alignment, distillation losses, proxy-tuning.

Expected values are written out by hand (the formula next to each number); no Ray, no shipped
checkpoints (the proxy-tuning test uses random-init tiny models).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmllm.collab.align import align_tokens, edit_distance, exact_map, one_to_one, transfer_topk, vocab_map
from fedmllm.collab.kd import (
    dual_min_ce,
    fit_projector,
    kd_loss,
    min_ce_index,
    representation_loss,
    sequence_ce,
    topk,
)
from fedmllm.collab.proxy import proxy_generate, proxy_logits
from fedmllm.models.tokenizer import train_tokenizer

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------
# kd.py


def test_topk_returns_values_then_ids():
    values, ids = topk(torch.tensor([[0.1, 3.0, -1.0, 2.0]]), 2)
    assert ids.tolist() == [[1, 3]]
    assert values.tolist() == [[3.0, 2.0]]
    with pytest.raises(ValueError, match="k must be"):
        topk(torch.zeros(1, 4), 5)


def _kd_inputs():
    """Two examples, two positions, a 4-word vocabulary, teacher top-2."""
    logits = torch.zeros(2, 2, 4)
    # Example 0, position 0: logits 2 ln [1, 2, 3, 4], so softmax(logits / 2) = [1, 2, 3, 4] / 10.
    logits[0, 0] = 2 * torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    ids = torch.zeros(2, 2, 2, dtype=torch.long)
    values = torch.zeros(2, 2, 2)
    # Teacher ids [3, 1] with values 2 ln [3, 1]: p_t = softmax(values / 2) = [3/4, 1/4].
    ids[0, 0] = torch.tensor([3, 1])
    values[0, 0] = 2 * torch.log(torch.tensor([3.0, 1.0]))
    # Example 0, position 1: masked out, and junk (all -inf) that must not turn into NaN.
    values[0, 1] = NEG_INF
    # Example 1, position 0: uniform student (zeros), teacher all on id 2 (the other slot -inf).
    ids[1, 0] = torch.tensor([2, 0])
    values[1, 0] = torch.tensor([0.0, NEG_INF])
    # Example 1, position 1: masked out.
    mask = torch.tensor([[True, False], [True, False]])
    return logits, ids, values, mask


# KL at (0, 0): 3/4 ln((3/4) / (4/10)) + 1/4 ln((1/4) / (2/10)); at (1, 0): 1 * ln(1 / (1/4)) = ln 4.
KL_00 = 0.75 * math.log(0.75 / 0.4) + 0.25 * math.log(0.25 / 0.2)
KL_10 = math.log(4.0)


def test_kd_loss_temperature_2_topk_2_by_hand():
    logits, ids, values, mask = _kd_inputs()
    loss = kd_loss(logits, ids, values, mask, temperature=2.0)
    # T^2 * mean over the two masked positions.
    assert loss.item() == pytest.approx(4.0 * (KL_00 + KL_10) / 2, rel=1e-6)


def test_kd_loss_per_example_weights_by_hand():
    logits, ids, values, mask = _kd_inputs()
    loss = kd_loss(logits, ids, values, mask, temperature=2.0, weights=torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx(4.0 * (1 * KL_00 + 3 * KL_10) / (1 + 3), rel=1e-6)


def test_kd_loss_temperature_1():
    logits, ids, values, mask = _kd_inputs()
    # At T = 1, position (1, 0) is unchanged (uniform student, one-hot teacher): ln 4.
    only_second = torch.tensor([[False, False], [True, False]])
    assert kd_loss(logits, ids, values, only_second).item() == pytest.approx(KL_10, rel=1e-6)


def test_kd_loss_gradient_is_finite_and_zero_without_positions():
    logits, ids, values, mask = _kd_inputs()
    logits.requires_grad_(True)
    kd_loss(logits, ids, values, mask, temperature=2.0).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[:, 1].abs().sum() == 0  # masked positions get no gradient
    logits.grad = None
    empty = kd_loss(logits, ids, values, torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.grad_fn is not None
    empty.backward()
    assert logits.grad.abs().sum() == 0


def test_sequence_ce_by_hand():
    logits = torch.zeros(2, 3, 2)
    logits[0, 2] = torch.tensor([math.log(3.0), 0.0])  # label 1: -ln(1 / (3 + 1)) = ln 4
    labels = torch.tensor([[0, -100, 1], [-100, -100, 1]])
    # Row 0: (ln 2 + ln 4) / 2 = 1.5 ln 2; row 1: ln 2 (zeros logits over 2 words).
    expected = [1.5 * math.log(2.0), math.log(2.0)]
    assert sequence_ce(logits, labels).tolist() == pytest.approx(expected, rel=1e-6)


def test_dual_min_ce_strictly_lower_teaches():
    a_teaches_b, b_teaches_a = dual_min_ce(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 1.0]))
    assert a_teaches_b.tolist() == [True, False, False]
    assert b_teaches_a.tolist() == [False, False, True]  # the tie (2 vs 2): nobody


def test_min_ce_index_lowest_client_per_example():
    ce = torch.tensor([[1.0, 5.0, 3.0],
                       [2.0, 1.0, 3.0],
                       [0.5, 4.0, 3.0]])
    assert min_ce_index(ce).tolist() == [2, 1, 0]  # last column: a tie, the first client


def test_representation_loss_mse_and_contrastive_by_hand():
    x = torch.tensor([[1.0, 2.0]])
    assert representation_loss(x, torch.tensor([[3.0, 2.0]])).item() == pytest.approx((4 + 0) / 2)
    # Orthogonal unit rows; y is a rescaled copy (cosine ignores scale). sim / 0.5 = [[2, 0], [0, 2]],
    # so each row's (and column's) InfoNCE is -ln(e^2 / (e^2 + e^0)) = ln(1 + e^-2).
    x = torch.eye(2)
    y = torch.tensor([[3.0, 0.0], [0.0, 5.0]])
    loss = representation_loss(x, y, kind="contrastive", temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    with pytest.raises(ValueError, match="valid: mse, contrastive"):
        representation_loss(x, y, kind="cosine")


def test_fit_projector_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(64, 3, generator=g)
    w_true = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    b_true = torch.tensor([0.25, -1.0])
    w, b = fit_projector(src, src @ w_true + b_true, ridge=1e-8)
    assert w.dtype == b.dtype == torch.float32 and w.shape == (3, 2) and b.shape == (2,)
    torch.testing.assert_close(w, w_true, atol=1e-4, rtol=0)
    torch.testing.assert_close(b, b_true, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# align.py


@pytest.fixture(scope="module")
def tokenizers():
    """A WordPiece (64 entries) and a word-level tokenizer on different small corpora."""
    pieces = train_tokenizer(["the cat sat on the mat", "look at the red cat", "attract attract attract",
                              "sing ring king bring sting"] * 2, kind="wordpiece", vocab_size=64)
    words = train_tokenizer(["the cat sat at the mat", "attract ing red circle", "look at the dog"],
                            kind="word")
    return pieces, words


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("same", "same") == 0


def _mapped(src, dst, vmap, token):
    return dst.convert_ids_to_tokens(int(vmap[src.convert_tokens_to_ids(token)]))


def test_vocab_map_exact_piece_and_edit_distance(tokenizers):
    pieces, words = tokenizers
    # The WordPiece vocabulary has "##ing" but no word "ing"; the word-level one has "ing".
    assert "##ing" in pieces.get_vocab() and "ing" not in pieces.get_vocab()
    forward = vocab_map(pieces, words)
    assert forward.dtype == np.int64 and forward.shape == (len(pieces),)
    for token in ("the", "attract", "<|im_end|>", "<pad>", "<image>"):
        assert _mapped(pieces, words, forward, token) == token  # exact (specials too)
    assert _mapped(pieces, words, forward, "##ing") == "ing"  # piece -> word
    assert _mapped(pieces, words, forward, "##at") == "at"
    assert _mapped(pieces, words, forward, "re") == "red"  # edit distance 1, the unique minimum
    assert _mapped(pieces, words, forward, "king") == "ing"
    backward = vocab_map(words, pieces)
    assert _mapped(words, pieces, backward, "ing") == "##ing"  # word -> piece
    # "dog" is at distance 2 from "d", "g", "o", "##d", ...: the lowest id ("d") wins.
    assert _mapped(words, pieces, backward, "dog") == "d"
    assert pieces.convert_tokens_to_ids("d") < pieces.convert_tokens_to_ids("g")


def test_exact_map_marks_missing_with_minus_one(tokenizers):
    pieces, words = tokenizers
    exact = exact_map(pieces, words)
    ids = pieces.convert_tokens_to_ids
    assert exact[ids("the")] == words.convert_tokens_to_ids("the")
    assert exact[ids("<|im_end|>")] == words.convert_tokens_to_ids("<|im_end|>")
    assert exact[ids("##ing")] == -1 and exact[ids("re")] == -1


def test_align_tokens_word_against_pieces():
    # One word against its five pieces: every piece pairs with the word, so nothing is one-to-one.
    path = align_tokens(["attract"], ["at", "##t", "##ra", "##c", "##t"])
    assert path == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]
    assert one_to_one(path) == []
    # Costs (edit distance / longer length, ## stripped): is/is 0, is/at 2/2 = 1, attract/at 5/7,
    # attract/tract 2/7, ?/? 0. Via (1,1): 0 + 5/7 + 2/7 + 0 = 1 < 0 + 1 + 2/7 + 0 via (0,1): the
    # split word takes both its pieces (so neither is one-to-one), "is" keeps its own token.
    path = align_tokens(["is", "attract", "?"], ["is", "at", "##tract", "?"])
    assert path == [(0, 0), (1, 1), (1, 2), (2, 3)]
    assert one_to_one(path) == [(0, 0), (2, 3)]
    assert align_tokens(["same", "words"], ["same", "words"]) == [(0, 0), (1, 1)]
    assert align_tokens([], ["x"]) == []


def test_transfer_topk_merges_duplicates_and_masks_unaligned():
    vmap = np.array([0, 2, 2, 1])  # src ids 1 and 2 both map to dst id 2
    ids = np.array([[1, 2, 3], [0, 3, 1], [3, 2, 1]])
    values = np.array([[1.0, 2.0, 0.5], [3.0, 2.0, 1.0], [9.0, 9.0, 9.0]], dtype=np.float32)
    dst_ids, dst_values, mask = transfer_topk(ids, values, [(0, 1), (1, 0)], vmap, dst_len=3)
    assert dst_ids.shape == dst_values.shape == (3, 3) and mask.tolist() == [True, True, False]
    assert dst_ids[1].tolist() == [2, 2, 1]
    assert dst_values[1, 0] == pytest.approx(math.log(math.exp(1.0) + math.exp(2.0)), rel=1e-6)
    assert dst_values[1, 1] == NEG_INF and dst_values[1, 2] == 0.5
    assert dst_ids[0].tolist() == [0, 1, 2] and dst_values[0].tolist() == [3.0, 2.0, 1.0]
    assert dst_ids[2].tolist() == [0, 0, 0] and dst_values[2].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# proxy.py


def test_proxy_logits_same_vocab_is_exact():
    g = torch.Generator().manual_seed(0)
    large, tuned, base = (torch.randn(2, 3, 5, generator=g) for _ in range(3))
    assert torch.equal(proxy_logits(large, tuned, base), large + (tuned - base))
    torch.testing.assert_close(proxy_logits(large, tuned, base, alpha=0.5), large + 0.5 * (tuned - base))


def test_proxy_logits_through_a_vocab_map():
    large = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    tuned = torch.tensor([[1.0, 2.0, 3.0]])
    base = torch.tensor([[0.0, 0.0, 1.0]])  # delta = [1, 2, 2]
    vocab = np.array([2, -1, 0, 0])
    out = proxy_logits(large, tuned, base, vocab=vocab)
    assert out.tolist() == [[10.0 + 2.0, 20.0, 30.0 + 1.0, 40.0 + 1.0]]
    assert proxy_logits(large, tuned, base, vocab=vocab, alpha=2.0).tolist() == [[14.0, 20.0, 32.0, 42.0]]
    with pytest.raises(ValueError, match="vocab=exact_map"):
        proxy_logits(large, tuned, base)


def test_proxy_generate_with_tuned_equal_base_is_the_large_model():
    from fedmllm.config import Config
    from fedmllm.data.suite import load_task
    from fedmllm.eval.generate import generate
    from fedmllm.models import build_model

    samples = load_task("synth-iconqa", "test", 3, 0, Config().data)
    large = build_model("tiny-llava-ov-large", pretrained=False, seed=1)
    small = build_model("tiny-llava-ov", pretrained=False, seed=2)
    expected = generate(large.model, large.processor, samples, batch_size=3, max_new_tokens=6)
    got = proxy_generate(large.model, large.processor, small.model, small.model, small.processor,
                         samples, max_new_tokens=6, batch_size=2)
    assert got == expected
    assert any(expected)  # random init still says something
