"""``repr_align``: transfer through vision-language representations instead of outputs (the
direction arXiv 2503.04543 §5.1.2 asks for; no anchor has it). Clients FedAvg the small LoRA and
upload, for the public set, two pooled representations of their trained model: the mean projected
visual token (the image as the small LLM sees it) and the mean last hidden state over the answer
positions — never inputs. The server fits, once on the two *base* models, ridge projectors between
the small and the large representation spaces; each round it then tunes the large model's LoRA so
its representations move to (its base representations + the projected shift of the client mean
from the small base's), MSE or contrastive, beside the public CE, and the aggregated small model
towards the projected shift of the large model the same way. What crosses the projector is only
the shift tuning caused (downstream knowledge), never the projector's fitting error."""

from __future__ import annotations

import numpy as np
import torch

from fedmllm.collab.base import OUTPUTS, Paradigm, register_paradigm

KEYS = ("visual", "hidden")


@register_paradigm
class ReprAlign(Paradigm):
    name = "repr_align"
    description = "representation alignment (ours): pooled visual/hidden states of the public set, projected, aligned"
    family = "representation"

    def output_shapes(self, client):
        p, d = len(self.sides.public), self.sides.width("small")
        return {OUTPUTS: {k: (p, d) for k in KEYS}}

    def client_outputs(self, payload, model, processor, cfg):
        from fedmllm.collab.outputs import pooled_representations
        from fedmllm.collab.public import public_samples

        reps = pooled_representations(model, processor, public_samples(cfg))
        return {OUTPUTS: {k: reps[k].numpy().astype(np.float32) for k in KEYS}}

    def server_step(self, server_round, small, replies):
        s = self.sides
        weights = np.array([r.num_examples for r in replies], np.float64)
        weights /= weights.sum()
        clients = {k: sum(w * r.arrays[OUTPUTS][k] for w, r in zip(weights, replies)) for k in KEYS}
        proj, base = s.projectors(), s.base_representations()  # fitted / computed once on the bases
        # Each side's target = its own base representation + the other side's shift from its base,
        # projected: the projectors' fitting error never enters, only what tuning moved crosses.
        target_large = {k: torch.as_tensor(base["large"][k] + (clients[k] - base["small"][k]) @ proj["s2l"][k][0])
                        for k in KEYS}
        large_now = s.representations("large", self.large)
        target_small = {k: torch.as_tensor(base["small"][k] + (large_now[k] - base["large"][k]) @ proj["l2s"][k][0])
                        for k in KEYS}
        self.large, st_large = s.align("large", self.large, target_large, server_round)
        new_small, st_small = s.align("small", small, target_small, server_round)
        self._info = {"align_large": st_large, "align_small": st_small}
        return new_small
