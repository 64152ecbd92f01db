"""What a model says about the public set, in the forms the collaboration paradigms exchange.

- `answer_outputs`: teacher-forced on each public sample's reference answer, the logits at the
  answer positions (the positions that predict the answer's tokens and the end of turn), their
  top-k, the answer's token strings and the per-example cross-entropy. This is what logit KD
  (FedCoLLM, FedMKT) transfers; `pack_topk` / `unpack_topk` put it in fixed-shape arrays for the
  wire (ids travel as float32: exact for vocabularies below 2**24).
- `pooled_representations`: per public sample, the mean of the projected visual tokens (the image
  as the LLM sees it) and the mean of the last hidden states over the answer positions: what
  `repr_align` uploads instead of outputs (never inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmllm.data.collate import IGNORE_INDEX, encode_train, to_model


@dataclass
class AnswerOutputs:
    """One sample's answer-position outputs: top-k ids and logits (L, k), token strings, CE."""

    ids: np.ndarray
    values: np.ndarray
    tokens: list[str]
    ce: float


def _answer_rows(batch: dict) -> list[torch.Tensor]:
    """Per row, the positions whose logits predict a labelled (answer) token."""
    labels = batch["labels"]
    return [torch.nonzero(labels[i, 1:] != IGNORE_INDEX).flatten() for i in range(labels.shape[0])]


def forward_answers(model, processor, samples: list, *, hidden: bool = False):
    """(outputs, batch, rows): one teacher-forced forward of ``samples`` (with grad if enabled);
    ``rows[i]`` are the logit positions of sample i's answer tokens (label positions - 1)."""
    batch = to_model(encode_train(processor, samples), model)
    out = model(**batch, output_hidden_states=hidden)  # with labels: out.loss is the answer CE
    return out, batch, _answer_rows(batch)


@torch.no_grad()
def answer_outputs(model, processor, samples: list, k: int, batch_size: int = 16) -> list[AnswerOutputs]:
    """Top-``k`` answer-position logits of ``model`` on ``samples`` (eval mode, no grad)."""
    from fedmllm.collab.kd import topk

    was = model.training
    model.eval()
    tok = processor.tokenizer
    result = []
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start: start + batch_size]
            out, batch, rows = forward_answers(model, processor, chunk)
            logits = out.logits.float()
            for i, pos in enumerate(rows):
                lg = logits[i, pos]  # (L, V)
                target = batch["labels"][i, pos + 1]
                ce = float(torch.nn.functional.cross_entropy(lg, target))
                values, ids = topk(lg, min(k, lg.shape[-1]))
                result.append(AnswerOutputs(ids.cpu().numpy(), values.cpu().numpy(),
                                            tok.convert_ids_to_tokens(target.tolist()), ce))
    finally:
        model.train(was)
    return result


def answer_tokens(processor, samples: list) -> list[list[str]]:
    """Each sample's answer tokens (answer + end of turn) as ``processor``'s tokenizer splits them."""
    out = []
    for start in range(0, len(samples), 32):
        batch = encode_train(processor, samples[start: start + 32])
        for i, pos in enumerate(_answer_rows(batch)):
            out.append(processor.tokenizer.convert_ids_to_tokens(batch["labels"][i, pos + 1].tolist()))
    return out


def pack_topk(outputs: list[AnswerOutputs], length: int, k: int) -> dict[str, np.ndarray]:
    """Fixed-shape arrays for the wire: ``ids``/``values`` (P, length, k) float32 (padding 0 /
    -1e4), ``lengths`` (P,) and ``ce`` (P,). Answers longer than ``length`` are cut."""
    p = len(outputs)
    ids = np.zeros((p, length, k), np.float32)
    values = np.full((p, length, k), -1e4, np.float32)
    lengths = np.zeros(p, np.float32)
    ce = np.zeros(p, np.float32)
    for i, o in enumerate(outputs):
        n, kk = min(len(o.ids), length), min(o.ids.shape[1], k)
        ids[i, :n, :kk] = o.ids[:n, :kk]
        values[i, :n, :kk] = o.values[:n, :kk]
        lengths[i], ce[i] = n, o.ce
    return {"ids": ids, "values": values, "lengths": lengths, "ce": ce}


def unpack_topk(arrays: dict[str, np.ndarray], tokens: list[list[str]]) -> list[AnswerOutputs]:
    """The inverse of `pack_topk` (``tokens``: the answers' token strings on the sending side)."""
    out = []
    for i, toks in enumerate(tokens):
        n = int(arrays["lengths"][i])
        out.append(AnswerOutputs(arrays["ids"][i, :n].astype(np.int64), arrays["values"][i, :n],
                                 list(toks[:n]), float(arrays["ce"][i])))
    return out


@torch.no_grad()
def pooled_representations(model, processor, samples: list, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """``visual`` (P, d): mean projected image token (the LLM's input embedding of the image);
    ``hidden`` (P, d): mean last hidden state over the answer positions (eval mode, no grad; the
    server's alignment loss takes them from its training forward, `pooled_from`)."""
    visual, hidden = [], []
    was = model.training
    model.eval()
    try:
        for start in range(0, len(samples), batch_size):
            out, batch, rows = forward_answers(model, processor, samples[start: start + batch_size], hidden=True)
            v, h = pooled_from(model, out, batch, rows)
            visual.append(v)
            hidden.append(h)
    finally:
        model.train(was)
    return {"visual": torch.cat(visual), "hidden": torch.cat(hidden)}


def pooled_from(model, out, batch: dict, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(visual, hidden) pooled representations from a forward's hidden states (`forward_answers`
    with ``hidden=True``); they keep the forward's graph."""
    last = out.hidden_states[-1].float()
    emb = out.hidden_states[0].float()  # input embeddings: image tokens are the projected features
    image_id = model.config.image_token_id if hasattr(model.config, "image_token_id") else \
        model.config.image_token_index
    is_image = batch["input_ids"] == image_id
    v = torch.stack([emb[i][is_image[i]].mean(0) for i in range(len(rows))])
    h = torch.stack([last[i, pos].mean(0) for i, pos in enumerate(rows)])
    return v, h
