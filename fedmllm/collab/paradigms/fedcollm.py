"""``fedcollm``: FedCoLLM (Fan et al. 2024, FATE-LLM). Clients FedAvg the small model's LoRA; on the
public set the server then distils the large model into the aggregated small one and the small
one into the large one's LoRA (mutual KD over the answer tokens: top-k, temperature, token
alignment where the vocabularies differ; FATE-LLM's stored trainer builds the teacher from token
ids, we use the teacher's logits as the paper describes), and broadcasts the distilled small adapter."""

from __future__ import annotations

from fedmllm.collab.base import Paradigm, register_paradigm


@register_paradigm
class FedCoLLM(Paradigm):
    name = "fedcollm"
    description = "FedCoLLM, Fan et al. 2024: FedAvg of the small LoRA + server-side mutual KD with the large model"
    family = "logit"

    def server_step(self, server_round, small, replies):
        s = self.sides
        large_out = s.outputs("large", self.large)
        small_out = s.outputs("small", small)
        new_small, st_small = s.distill("small", small, large_out, server_round)
        self.large, st_large = s.distill("large", self.large, small_out, server_round)
        self._info = {"kd_small": st_small, "kd_large": st_large}
        return new_small
