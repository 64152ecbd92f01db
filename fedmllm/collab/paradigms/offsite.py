"""``offsite``: offsite-tuning (Xiao et al. 2023) / FedBiOT (Wu et al. 2024). The server makes an
emulator of the large model — its first `emulator_bottom` and last `emulator_top` LLM layers as the
trainable adapter, the middle layers uniformly layer-dropped to `emulator_keep` of them, frozen
(`fedmllm.collab.emulator`) — and sends emulator + adapter to the clients, who tune only the
adapter's LoRA on their data (FedAvg); the server plugs the aggregated adapter into the full large
model. Transfer is of parameters, not outputs; the small models take no part. (The optional
distillation of the emulator on the public set, FedBiOT's, is not done here.)"""

from __future__ import annotations

from fedmllm.collab.base import Paradigm, register_paradigm
from fedmllm.federated.algorithms.base import StatePlan


@register_paradigm
class Offsite(Paradigm):
    name = "offsite"
    description = "offsite-tuning, Xiao et al. 2023 / FedBiOT: clients tune the adapter of a layer-dropped emulator"
    family = "parameter"
    trains_small = False

    def plan(self, client, shapes):
        adapter, frozen = self.sides.emulator_split(list(shapes))
        return StatePlan(shared=tuple(adapter), frozen=tuple(frozen))

    def client_plan(self, payload, shapes, received):
        return StatePlan(shared=tuple(k for k in shapes if k in received),
                         frozen=tuple(k for k in shapes if k not in received))

    def server_step(self, server_round, small, replies):
        self.large = self.sides.plug(self.large, small)
        return small
