"""Server-side training on the public set: knowledge distillation and representation alignment.

The server holds both models (the large one and the aggregated small one) and the public set, the
only data it sees. `kd_targets` turns one side's answer-position top-k logits into the other side's
token positions and vocabulary (`fedmllm.collab.align`: identity when both use one tokenizer);
`train_public` then tunes a model's LoRA state on the public set with

    loss = (1 - w) * CE(reference answer) + w * KD(teacher top-k, temperature)   [+ extra term]

(per-example KD weights select who teaches whom: `fedmkt`'s DualMinCE).
Our own short AdamW loop rather than `train_local`: every step needs the batch's KD targets and
the extra loss sees the batch, which the one training loop's hooks do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from fedmllm.collab.outputs import AnswerOutputs, forward_answers
from fedmllm.federated.algorithms.base import Arrays, as_arrays


@dataclass
class KDTarget:
    """One public sample's teacher targets on the student's answer positions."""

    ids: np.ndarray  # (L_student, k) student-vocabulary ids
    values: np.ndarray  # (L_student, k) teacher logits (-inf: no mass)
    mask: np.ndarray  # (L_student,) bool: positions the teacher aligned to


def kd_targets(teacher: Sequence[AnswerOutputs], student_tokens: Sequence[list[str]],
               vmap: Optional[np.ndarray]) -> list[KDTarget]:
    """The teacher's top-k moved onto the student's tokenization of the same answers.

    ``vmap``: teacher id -> student id (`align.vocab_map`), or None when both sides share the
    tokenizer (positions and ids are then the teacher's own)."""
    from fedmllm.collab.align import align_tokens, one_to_one, transfer_topk

    out = []
    for t, toks in zip(teacher, student_tokens):
        if vmap is None:
            n = min(len(toks), len(t.ids))
            ids = np.zeros((len(toks), t.ids.shape[1]), np.int64)
            values = np.full((len(toks), t.ids.shape[1]), -np.inf, np.float32)
            ids[:n], values[:n] = t.ids[:n], t.values[:n]
            mask = np.zeros(len(toks), bool)
            mask[:n] = True
        else:
            pairs = one_to_one(align_tokens(list(t.tokens), list(toks)))
            ids, values, mask = transfer_topk(t.ids, t.values, pairs, vmap, len(toks))
        out.append(KDTarget(np.asarray(ids, np.int64), np.asarray(values, np.float32), np.asarray(mask, bool)))
    return out


@dataclass
class PublicTraining:
    """Settings of one server-side training pass on the public set."""

    steps: int
    lr: float
    batch_size: int
    kd_weight: float
    temperature: float
    seed: int
    max_grad_norm: float = 1.0


ExtraLoss = Callable[[object, dict, list[torch.Tensor], list[int]], torch.Tensor]


def train_public(tuned, processor, samples: list, settings: PublicTraining,
                 targets: Optional[list[KDTarget]] = None, weights: Optional[np.ndarray] = None,
                 extra: Optional[ExtraLoss] = None) -> tuple[Arrays, dict]:
    """Tune ``tuned`` (a `fedmllm.federated.tuned.Tuned` with the starting state loaded) on the
    public ``samples``; returns (new state, stats). ``targets[i]`` / ``weights[i]``: sample i's KD
    target and weight (weight 0: only CE for it); ``extra(out, batch, rows, batch_indices)`` adds a
    loss term from the step's own forward (run with hidden states when ``extra`` is given)."""
    from fedmllm.collab.kd import kd_loss

    model, method = tuned.model, tuned.method
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed)
    model.train()
    ce_sum = kd_sum = extra_sum = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for _ in range(settings.steps):
            idx = torch.randint(len(samples), (min(settings.batch_size, len(samples)),), generator=gen).tolist()
            batch_samples = [samples[i] for i in idx]
            out, batch, rows = forward_answers(model, processor, batch_samples, hidden=extra is not None)
            ce = out.loss
            loss = (1 - settings.kd_weight) * ce
            if targets is not None and settings.kd_weight > 0:
                student, t_ids, t_vals, mask = _batch_targets(out.logits, rows, [targets[i] for i in idx])
                w = None if weights is None else torch.as_tensor(weights[idx], dtype=torch.float32)
                kd = kd_loss(student, t_ids, t_vals, mask, settings.temperature, w)
                loss = loss + settings.kd_weight * kd
                kd_sum += float(kd.detach())
            if extra is not None:
                term = extra(out, batch, rows, idx)
                loss = loss + term
                extra_sum += float(term.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            opt.step()
            ce_sum += float(ce.detach())
    model.eval()
    n = max(settings.steps, 1)
    return as_arrays(method.get_state(model)), {"ce": ce_sum / n, "kd": kd_sum / n, "extra": extra_sum / n}


def _batch_targets(logits: torch.Tensor, rows: list[torch.Tensor], targets: list[KDTarget]):
    """(student logits (B, L, V), teacher ids (B, L, k), values (B, L, k), mask (B, L)), padded."""
    length = max(len(r) for r in rows)
    k = max(t.ids.shape[1] for t in targets)
    b, v = len(rows), logits.shape[-1]
    student = logits.new_zeros((b, length, v))
    ids = torch.zeros((b, length, k), dtype=torch.long)
    vals = torch.full((b, length, k), float("-inf"))
    mask = torch.zeros((b, length), dtype=torch.bool)
    for i, (pos, t) in enumerate(zip(rows, targets)):
        n = min(len(pos), len(t.mask))
        student[i, :n] = logits[i, pos[:n]]
        ids[i, :n, : t.ids.shape[1]] = torch.as_tensor(t.ids[:n])
        vals[i, :n, : t.ids.shape[1]] = torch.as_tensor(t.values[:n])
        mask[i, :n] = torch.as_tensor(t.mask[:n])
    ids = ids.clamp_(0, v - 1)
    return student.float(), ids, vals, mask
