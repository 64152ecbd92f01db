"""``fedmkt``: FedMKT (Fan et al. 2024, FATE-LLM), selective mutual knowledge transfer. Each client
uploads, besides its small LoRA (FedAvg), the top-k answer logits of its trained model on the
public set (ids + values + its cross-entropy per example: outputs, not parameters). Per public
example the server picks the client with the lowest CE (MinCE) and, DualMinCE, lets the side with
the lower CE teach the other: the best client teaches the large model where it beats it, the large
model teaches the aggregated small one where it beats that. Token alignment as FedMKT's
(`fedmllm.collab.align`: DTW over token strings + a vocabulary map by exact match / edit distance)."""

from __future__ import annotations

import numpy as np
import torch

from fedmllm.collab.base import OUTPUTS, Paradigm, register_paradigm


@register_paradigm
class FedMKT(Paradigm):
    name = "fedmkt"
    description = "FedMKT, Fan et al. 2024: selective (DualMinCE) mutual KD from clients' public-set logits"
    family = "logit"

    def output_shapes(self, client):
        c = self.sides.cfg.collab
        p, a, k = len(self.sides.public), c.max_answer_tokens, c.top_k
        return {OUTPUTS: {"ids": (p, a, k), "values": (p, a, k), "lengths": (p,), "ce": (p,)}}

    def client_outputs(self, payload, model, processor, cfg):
        from fedmllm.collab.outputs import answer_outputs, pack_topk
        from fedmllm.collab.public import public_samples

        c = cfg.collab
        outs = answer_outputs(model, processor, public_samples(cfg), c.top_k)
        return {OUTPUTS: pack_topk(outs, c.max_answer_tokens, c.top_k)}

    def server_step(self, server_round, small, replies):
        from fedmllm.collab.kd import dual_min_ce, min_ce_index
        from fedmllm.collab.outputs import unpack_topk

        s = self.sides
        clients = [unpack_topk(r.arrays[OUTPUTS], s.tokens["small"]) for r in replies]
        ce = np.stack([[o.ce for o in outs] for outs in clients])  # (C, P)
        best = min_ce_index(torch.as_tensor(ce)).numpy()
        best_out = [clients[int(c)][i] for i, c in enumerate(best)]
        ce_best = ce[best, np.arange(ce.shape[1])]
        large_out = s.outputs("large", self.large)
        small_out = s.outputs("small", small)
        ce_large = np.array([o.ce for o in large_out])
        ce_small = np.array([o.ce for o in small_out])
        client_teaches, _ = dual_min_ce(torch.as_tensor(ce_best), torch.as_tensor(ce_large))
        large_teaches, _ = dual_min_ce(torch.as_tensor(ce_large), torch.as_tensor(ce_small))
        client_teaches, large_teaches = client_teaches.numpy(), large_teaches.numpy()
        self.large, st_large = s.distill("large", self.large, best_out, server_round,
                                         weights=client_teaches.astype(np.float32))
        new_small, st_small = s.distill("small", small, large_out, server_round,
                                        weights=large_teaches.astype(np.float32))
        self._info = {"kd_small": st_small, "kd_large": st_large,
                      "clients_teach_large": int(client_teaches.sum()), "large_teaches_small": int(large_teaches.sum())}
        return new_small
