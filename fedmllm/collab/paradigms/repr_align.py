"""``repr_align``: transfer through vision-language representations instead of outputs (the
direction arXiv 2503.04543 §5.1.2 asks for; no anchor has it). Clients FedAvg the small LoRA and
upload, for the public set, two pooled representations of their trained model: the mean projected
visual token (the image as the small LLM sees it) and the mean last hidden state over the answer
positions — never inputs. The server fits, once on the two *base* models, ridge projectors between
the small and the large representation spaces; each round it then tunes the large model's LoRA so
its representations move to the projected client mean (MSE or contrastive), beside the public CE,
and the aggregated small model towards the projected large representations the same way. What
crosses the projector is the clients' shift away from the base: downstream tuning."""

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
        proj = s.projectors()  # fitted once on the base models
        target_large = {k: torch.as_tensor(clients[k] @ proj["s2l"][k][0] + proj["s2l"][k][1]) for k in KEYS}
        large_now = s.representations("large", self.large)
        target_small = {k: torch.as_tensor(large_now[k] @ proj["l2s"][k][0] + proj["l2s"][k][1]) for k in KEYS}
        self.large, st_large = s.align("large", self.large, target_large, server_round)
        new_small, st_small = s.align("small", small, target_small, server_round)
        self._info = {"align_large": st_large, "align_small": st_small}
        return new_small
