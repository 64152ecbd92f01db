"""Losses of large-small edge collaboration: top-k logit distillation, min-CE teacher selection,
representation alignment and a closed-form projector.

- `kd_loss`: Hinton et al. (2015) distillation, ``T^2 * KL(p_t || p_s)``, with the teacher
  restricted to its top-k (what FedCoLLM / FedMKT send over the wire) and renormalized there.
- `dual_min_ce` / `min_ce_index`: FedMKT's (Fan et al. 2024, Sec. 3.3) selective mutual transfer:
  per example, whichever side has the lower cross-entropy on the reference answer teaches.
- `representation_loss`: MSE or symmetric InfoNCE (CLIP, Radford et al. 2021) between pooled
  representations of the same samples; `fit_projector` maps one model's space to another's by
  ridge least squares.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label value skipped by `sequence_ce` (as fedmllm.data.collate)
REPRESENTATION_KINDS = ("mse", "contrastive")


def topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, ids)`` of the ``k`` largest logits over the last dim, largest first."""
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"topk: k must be in 1..{logits.shape[-1]} (the vocabulary), got {k}")
    values, ids = torch.topk(logits, k, dim=-1)
    return values, ids


def kd_loss(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_values: torch.Tensor,
            mask: torch.Tensor, temperature: float = 1.0,
            weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Top-k distillation loss ``T^2 * mean KL(p_t || p_s)`` over the masked positions.

    Args:
        student_logits: (N, L, V) student logits.
        teacher_ids: (N, L, k) long, the teacher's top-k ids in the student's vocabulary.
        teacher_values: (N, L, k) the teacher's logits at those ids (``-inf``: probability 0).
        mask: (N, L) bool, positions that carry a teacher.
        temperature: ``T``; both distributions are softened by it.
        weights: optional (N,) per-example weights; the mean becomes
            ``sum(w * mask * KL) / sum(w * mask)``.

    ``p_t = softmax(values / T)`` over the k ids; ``log p_s = log_softmax(logits / T)`` over the
    whole vocabulary, gathered at the k ids. With no (weighted) position the loss is a zero that
    keeps ``student_logits`` in the graph.
    """
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    if teacher_ids.shape != teacher_values.shape or teacher_ids.shape[:2] != student_logits.shape[:2]:
        raise ValueError(f"kd_loss: teacher ids {tuple(teacher_ids.shape)} / values "
                         f"{tuple(teacher_values.shape)} must be (N, L, k) with (N, L) = "
                         f"{tuple(student_logits.shape[:2])}")
    mask = mask.bool()
    w = mask.to(student_logits.dtype)
    if weights is not None:
        w = w * weights.to(student_logits.dtype)[:, None]
    total = w.sum()
    if not mask.any() or total <= 0:
        return student_logits.sum() * 0.0
    # Only the masked positions: unmasked ones may hold junk (all -inf) that would turn into NaN.
    log_ps = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)
    log_ps = log_ps.gather(-1, teacher_ids[mask].long())
    p_t = F.softmax(teacher_values[mask].float() / temperature, dim=-1)
    kl = (torch.xlogy(p_t, p_t) - p_t * log_ps).sum(-1)  # xlogy: 0 * log 0 = 0
    return temperature ** 2 * (w[mask].float() * kl).sum() / total.float()


def sequence_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) mean token cross-entropy per example; ``labels`` (N, L) already aligned with the
    logits' positions (no shift), ``-100`` ignored. A row with no label gets 0."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"sequence_ce: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
                         "must share (N, L)")
    token = F.cross_entropy(logits.float().transpose(1, 2), labels.long(),
                            ignore_index=IGNORE_INDEX, reduction="none")
    counts = (labels != IGNORE_INDEX).sum(1).clamp(min=1)
    return token.sum(1) / counts


def dual_min_ce(ce_a: torch.Tensor, ce_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a_teaches_b, b_teaches_a)``: per example, the side with strictly lower CE teaches the
    other; on a tie nobody does (FedMKT's dual min-CE selection)."""
    if ce_a.shape != ce_b.shape:
        raise ValueError(f"dual_min_ce: shapes differ, {tuple(ce_a.shape)} vs {tuple(ce_b.shape)}")
    return ce_a < ce_b, ce_b < ce_a


def min_ce_index(ce: torch.Tensor) -> torch.Tensor:
    """(N,) for ``ce`` (C clients, N examples): the client of lowest CE per example (ties: the
    lowest client index)."""
    if ce.ndim != 2:
        raise ValueError(f"min_ce_index: ce must be (clients, examples), got {tuple(ce.shape)}")
    return ce.argmin(dim=0)


def representation_loss(x: torch.Tensor, y: torch.Tensor, kind: str = "mse",
                        temperature: float = 0.1) -> torch.Tensor:
    """Alignment loss between (N, d) representations of the same N samples.

    ``"mse"``: mean squared error. ``"contrastive"``: symmetric InfoNCE over cosine similarities
    divided by ``temperature``, row ``i`` of ``x`` and ``y`` being the positive pair.
    """
    if kind not in REPRESENTATION_KINDS:
        raise ValueError(f"unknown representation loss {kind!r}; valid: {', '.join(REPRESENTATION_KINDS)}")
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"representation_loss: x {tuple(x.shape)} and y {tuple(y.shape)} "
                         "must be the same (N, d)")
    if kind == "mse":
        return F.mse_loss(x, y)
    if temperature <= 0:
        raise ValueError(f"representation_loss: temperature must be > 0, got {temperature}")
    sim = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T / temperature
    target = torch.arange(len(x), device=x.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def fit_projector(src: torch.Tensor, dst: torch.Tensor, ridge: float = 1e-3
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W (d1, d2), b (d2,))`` minimising ``|src @ W + b - dst|^2 + ridge * |W|^2``.

    Closed form on centred data: ``W = (Xc^T Xc + ridge I)^-1 Xc^T Yc``, ``b = mean(dst) -
    mean(src) @ W`` (the bias is not penalised). Solved in float64, returned as float32.
    """
    if src.ndim != 2 or dst.ndim != 2 or len(src) != len(dst):
        raise ValueError(f"fit_projector: src {tuple(src.shape)} and dst {tuple(dst.shape)} must be "
                         "(N, d1) and (N, d2)")
    if ridge < 0:
        raise ValueError(f"fit_projector: ridge must be >= 0, got {ridge}")
    x, y = src.detach().double(), dst.detach().double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(gram, xc.T @ yc)
    b = my - mx @ w
    return w.float(), b.float()
