"""User-level differential privacy around a federated algorithm: DP-FedAvg with fixed or adaptive clipping.

McMahan et al. 2018 (arXiv 1710.06963, Alg. 1 "DP-FedAvg") with fixed clipping; Andrew et al. 2021
(arXiv 1905.03871, Alg. 1) with adaptive clipping. The four modes are those of Flower's
``DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping`` wrappers. Each round:

1. **Clip** every client's update delta_k = y_k - x (all its shared keys as one vector) to L2 norm C
   (`clip_update`). ``server-*``: the server clips. ``client-*``: the payload carries
   ``protocol.DP_CLIP`` = C and the client clips (`fedmllm.federated.client`); the server checks
   ||delta_k|| <= C, counts violations and clips anyway, so the guarantee never rests on clients.
2. **Average uniformly**: user-level DP bounds each *client's* influence, so every reply weighs 1
   (its ``num_examples`` is set to 1 before the inner aggregate); example weights would let a large
   client move the mean by more than C/m.
3. **Noise**: the inner aggregate plus N(0, (z C / m)^2) on every aggregated key, m = replies
   aggregated (Flower's ``compute_stdv``), drawn from a generator seeded by (seed, round, stream),
   so a resumed round draws the same noise.
4. **Adapt** (adaptive modes): b = #{k : ||delta_k|| <= C} + N(0, sigma_b^2);
   C <- C exp(-clip_lr (b/m - target_quantile)); the update noise uses
   z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) (`adaptive_noise`), so update and count together cost
   what one Gaussian mechanism of multiplier z costs (Andrew et al., Sec. 3.1).

Only an inner algorithm whose aggregate is the mean of the clients' shared states and nothing else
(``secure_aggregatable``: FedAvg, FedProx, FFA-LoRA) can be wrapped: anything else it uploads (SCAFFOLD's
controls) would leak unnoised, and a rule that selects or reweights clients by their updates (Krum,
medians, HetLoRA) has a sensitivity far above C/m. Personalized rules are refused too: each client's
own model is trained and reported without noise. Under secure aggregation the server sees one
pre-summed reply, so only ``client-fixed`` applies, and the sum must weigh every client 1.

**Accounting** (`epsilon`). The round loop samples a fixed-size subset of m of the N clients without
replacement (`rounds.sampled_partitions`) and divides by the number of replies, so N and m are
public and the matching neighbouring relation is *replace-one* (two federations differ in one
client's data). dp-accounting's RDP accountant supports exactly this pair:
``SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))`` under
``NeighboringRelation.REPLACE_ONE`` (Wang, Balle & Kasiviswanathan 2019, Thm. 27), self-composed
over the rounds; with full participation the plain ``GaussianDpEvent(z / 2)`` per round. Why z/2:
replacing one client's clipped update moves the sum by up to 2C, and the sum's noise has std z C.
Adaptive modes account with the configured z: the count has replace-one sensitivity 1 and noise
sigma_b, and (z_delta / 2)^-2 + sigma_b^-2 = (z / 2)^-2. (Poisson sampling with q = m/N under
add/remove-one, as DP-FedAvg papers report, is a different mechanism from the one the loop runs.)
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from fedmllm.errors import UserError
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms.base import STATE, Algorithm, Arrays, Payload, Reply
from fedmllm.federated.attacks.base import delta, norm, rebuild

MODES = ("server-fixed", "client-fixed", "server-adaptive", "client-adaptive")
NOISE_STREAM, COUNT_STREAM = 0, 1  # independent generators of the update noise and the count noise
STATE_KEY = "dp-clipping-norm"  # the wrapper's entry in the checkpointed ``values``


def clip_update(trained: Arrays, received: Arrays, clipping_norm: float) -> tuple[Arrays, float]:
    """(received + delta min(1, C / ||delta||), ||delta||) with delta = trained - received over all
    keys as one vector (a key not received, or of another shape, counts from 0: `attacks.base.delta`),
    in the trained arrays' dtypes; equals Flower's ``compute_clip_model_update`` (FlatClip,
    McMahan et al. 2018). An update already within the bound comes back unchanged."""
    if not clipping_norm > 0:
        raise ValueError(f"clipping norm must be > 0, got {clipping_norm}")
    update = delta(trained, received)
    length = norm(update)
    if length <= clipping_norm:
        return dict(trained), length
    scale = clipping_norm / length
    return rebuild({k: v * scale for k, v in update.items()}, trained, received), length


def noise_rng(seed: int, server_round: int, stream: int) -> np.random.Generator:
    """The generator of one round's noise: a pure function of (seed, round, stream)."""
    return np.random.default_rng([seed % 2**64, server_round, stream])


def add_noise(state: Arrays, keys: Sequence[str], std: float, rng: np.random.Generator) -> Arrays:
    """``state`` with N(0, std^2) added to each element of ``keys`` (in that order), dtypes kept."""
    out = dict(state)
    if std > 0:
        for k in keys:
            v = np.asarray(out[k])
            out[k] = (v.astype(np.float64) + rng.normal(0.0, std, v.shape)).astype(v.dtype)
    return out


def adaptive_noise(noise_multiplier: float, clients_per_round: int,
                   clipped_count_stddev: Optional[float] = None) -> tuple[float, float]:
    """(sigma_b, z_delta) of adaptive clipping (Andrew et al. 2021, Sec. 3.1; Flower's
    ``compute_adaptive_noise_params``): sigma_b defaults to m / 20, z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2.
    With z = 0 nothing is private and nothing is noised (sigma_b 0 unless given)."""
    z = float(noise_multiplier)
    if z == 0:
        return float(clipped_count_stddev or 0.0), 0.0
    default = clipped_count_stddev is None
    sigma_b = clients_per_round / 20 if default else float(clipped_count_stddev)
    if z >= 2 * sigma_b:
        raise UserError(
            f"privacy: adaptive clipping with noise multiplier {z:g} needs a count noise std above z/2 = "
            f"{z / 2:g} (z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2, Andrew et al. 2021), got sigma_b = {sigma_b:g}"
            + (f" (the default, {clients_per_round} clients per round / 20)" if default else "")
            + f": set privacy.clipped_count_stddev above {z / 2:g}, sample more than {10 * z:g} clients per "
              "round, or lower the noise multiplier")
    return sigma_b, (z ** -2 - (2 * sigma_b) ** -2) ** -0.5


@functools.lru_cache(maxsize=64)
def _round_rdp(noise_multiplier: float, num_clients: int, per_round: int) -> tuple[tuple, tuple]:
    """(orders, RDP) of one round (module docstring: replace-one, z/2, sampled without replacement)."""
    from dp_accounting import GaussianDpEvent, NeighboringRelation, SampledWithoutReplacementDpEvent
    from dp_accounting.rdp import RdpAccountant

    event = GaussianDpEvent(noise_multiplier / 2)
    if per_round < num_clients:
        event = SampledWithoutReplacementDpEvent(num_clients, per_round, event)
    accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    accountant.compose(event)
    return tuple(accountant.orders), tuple(accountant.rdp)


def epsilon(noise_multiplier: float, num_clients: int, clients_per_round: int, rounds: int,
            delta: float) -> float:
    """The epsilon of (epsilon, delta) user-level DP after ``rounds`` rounds (RDP accountant, see the
    module docstring); ``clients_per_round`` 0 or >= ``num_clients`` means everyone; z = 0 gives inf."""
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    per_round = clients_per_round if 0 < clients_per_round < num_clients else num_clients
    orders, rdp = _round_rdp(float(noise_multiplier), int(num_clients), int(per_round))
    return float(compute_epsilon(orders, rounds * np.asarray(rdp), delta)[0])


def _rounding_slack(state: Arrays, clipping_norm: float) -> float:
    """How far float rounding can push a correctly clipped update's norm past C: storing
    received + clipped delta rounds each element by at most eps/2 of its magnitude."""
    err = sum(np.finfo(v.dtype).eps ** 2 * float(np.sum(np.square(v, dtype=np.float64)))
              for v in state.values() if np.issubdtype(v.dtype, np.floating))
    return math.sqrt(err) + 1e-9 * clipping_norm


def _check_inner(inner: Algorithm) -> None:
    why = None
    if isinstance(inner, PrivateAlgorithm):
        why = "it is already private"
    elif inner.personalized:
        why = "it is personalized: each client's own model is trained and reported without noise"
    elif not inner.secure_aggregatable:
        why = ("its aggregate is not the plain mean of the clients' shared states: what else it uploads "
               "(e.g. SCAFFOLD's controls) would leak unnoised, and a rule that selects or reweights clients "
               "by their updates has a sensitivity far above C/m")
    if why:
        raise UserError(f"strategy {inner.name!r} cannot run with user-level DP (privacy.mode): {why}; "
                        "use fedavg, fedprox or ffa_lora, or set privacy.mode = off")


class PrivateAlgorithm(Algorithm):
    """``inner`` with user-level DP (the module docstring): every method delegates to ``inner``;
    `configure` adds ``DP_CLIP`` (client modes), `aggregate` clips, averages uniformly (every reply
    weighs 1, user-level DP), adds noise and adapts C. ``name`` stays the inner's, because the
    client looks up the client half by the name in the message."""

    def __init__(self, inner: Algorithm, *, mode: str, noise_multiplier: float, clipping_norm: float,
                 delta: float = 1e-5, num_clients: Optional[int] = None, clients_per_round: int = 0,
                 seed: int = 0, target_quantile: float = 0.5, clip_lr: float = 0.2,
                 clipped_count_stddev: Optional[float] = None):
        if mode not in MODES:
            raise UserError(f"privacy.mode must be one of off, {', '.join(MODES)}; got {mode!r}")
        _check_inner(inner)
        z = float(noise_multiplier)
        if not (math.isfinite(z) and z >= 0 and clipping_norm > 0 and 0 < delta < 1):
            raise UserError(f"privacy: need noise multiplier >= 0, clipping_norm > 0, 0 < delta < 1; got "
                            f"{z:g}, {clipping_norm:g}, {delta:g}")
        self.inner, self.mode, self.noise_multiplier, self.delta = inner, mode, z, float(delta)
        self.name, self.description, self.defaults = inner.name, inner.description, inner.defaults
        self.handles_non_averageable = inner.handles_non_averageable
        self.heterogeneous_ranks, self.personalized = inner.heterogeneous_ranks, inner.personalized
        self.secure_aggregatable = mode == "client-fixed"  # the one mode that needs no per-client norm
        self.adaptive, self.client_side = mode.endswith("adaptive"), mode.startswith("client")
        self.total_clients = int(num_clients if num_clients is not None else inner.num_clients)
        cpr = int(clients_per_round)
        self.per_round = cpr if 0 < cpr < self.total_clients else self.total_clients
        self.seed, self.clipping_norm = int(seed), float(clipping_norm)
        self.target_quantile, self.clip_lr = float(target_quantile), float(clip_lr)
        self.count_std, self.update_z = 0.0, z
        if self.adaptive:
            if not (0 <= self.target_quantile <= 1 and self.clip_lr > 0):
                raise UserError(f"privacy: adaptive clipping needs 0 <= target_quantile <= 1 and clip_lr > 0, "
                                f"got {target_quantile:g}, {clip_lr:g}")
            self.count_std, self.update_z = adaptive_noise(z, self.per_round, clipped_count_stddev)
        self.last: dict[str, Any] = {}

    def __getattr__(self, attr: str) -> Any:  # the inner's own attributes (options, moments, ranks)
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    # -- delegated -------------------------------------------------------------------------
    def set_client_ranks(self, ranks):
        self.inner.set_client_ranks(ranks)

    def set_lora_scaling(self, scaling):
        self.inner.set_lora_scaling(scaling)

    def client_rank(self, client):
        return self.inner.client_rank(client)

    def min_replies(self):
        return self.inner.min_replies()

    def resolved_options(self):
        return self.inner.resolved_options()

    def plan(self, client, shapes):
        return self.inner.plan(client, shapes)

    def prepare(self, payload, local_state, method, initial):
        return self.inner.prepare(payload, local_state, method, initial)

    def client_plan(self, payload, shapes, received):
        return self.inner.client_plan(payload, shapes, received)

    def hooks(self, payload, local_state, method, state):
        return self.inner.hooks(payload, local_state, method, state)

    def finish(self, payload, local_state, plan, result):
        return self.inner.finish(payload, local_state, plan, result)

    def init(self, global_state: Arrays) -> Optional[Arrays]:
        out = self.inner.init(global_state)
        self.expected(1, 0, out if out is not None else global_state)  # refuses extra records
        return out

    def expected(self, server_round, client, global_state):
        shapes = self.inner.expected(server_round, client, global_state)
        if set(shapes) != {STATE}:
            raise UserError(f"strategy {self.name!r} cannot run with user-level DP: its replies hold "
                            f"{sorted(set(shapes) - {STATE})} besides {STATE!r}, which would reach the server "
                            "unclipped and unnoised")
        return shapes

    def client_config(self, server_round):
        return {**self.inner.client_config(server_round), **self._dp_config()}

    def configure(self, server_round: int, client: int, global_state: Arrays) -> Payload:
        p = self.inner.configure(server_round, client, global_state)
        return Payload(p.arrays, {**p.config, **self._dp_config()})

    def _dp_config(self) -> dict[str, Any]:
        return {P.DP_CLIP: self.clipping_norm} if self.client_side else {}

    def round_info(self) -> dict[str, Any]:
        return {**self.inner.round_info(), **self.last}

    def state_dict(self) -> dict[str, Any]:
        s = self.inner.state_dict()
        return {"arrays": s["arrays"], "values": {**s["values"], STATE_KEY: self.clipping_norm}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        values = dict(state["values"])
        if STATE_KEY not in values:
            raise UserError(f"this checkpoint of strategy {self.name!r} was not written with privacy.mode = "
                            f"{self.mode}: it holds no clipping norm")
        self.clipping_norm = float(values.pop(STATE_KEY))
        self.inner.load_state_dict({**state, "values": values})

    # -- the private aggregate -------------------------------------------------------------
    def aggregate(self, server_round: int, global_state: Arrays, replies: Sequence[Reply]) -> Arrays:
        C = self.clipping_norm
        info: dict[str, Any] = {}
        if len(replies) == 1 and replies[0].partition_id < 0:  # one pre-summed secure aggregate
            m, inputs, unclipped = self._presummed(replies[0]), list(replies), 0
        else:
            m, inputs, unclipped, violations = len(replies), [], 0, 0
            for r in replies:
                clipped, length = clip_update(r.arrays[STATE], global_state, C)
                slack = _rounding_slack(r.arrays[STATE], C) if self.client_side else 0.0
                violations += length > C + slack
                unclipped += length <= C - slack  # a client-clipped update sits at C (within rounding)
                inputs.append(Reply(r.partition_id, 1, {**r.arrays, STATE: clipped}, r.metrics))
            if self.client_side:
                info["dp_clip_violations"] = int(violations)
        new = self.inner.aggregate(server_round, global_state, inputs)
        keys = sorted({k for r in replies for k in r.arrays[STATE]})
        std = self.update_z * C / m
        new = add_noise(new, keys, std, noise_rng(self.seed, server_round, NOISE_STREAM))
        if self.adaptive:
            count = unclipped + (noise_rng(self.seed, server_round, COUNT_STREAM).normal(0.0, self.count_std)
                                 if self.count_std > 0 else 0.0)
            info["dp_unclipped_fraction"] = float(count) / m  # the noised (private) fraction
            self.clipping_norm = C * math.exp(-self.clip_lr * (float(count) / m - self.target_quantile))
        self.last = {"dp_epsilon": epsilon(self.noise_multiplier, self.total_clients, self.per_round,
                                           server_round, self.delta),
                     "dp_delta": self.delta, "dp_noise_multiplier": self.update_z, "dp_clipping_norm": C,
                     "dp_noise_std": std, **info}
        return new

    def _presummed(self, reply: Reply) -> int:
        """m of a secure aggregate, after checking it can be made private."""
        if self.mode != "client-fixed":
            raise UserError(f"privacy.mode = {self.mode} needs each client's update norm, which secure "
                            "aggregation hides: use privacy.mode = client-fixed with federated.secagg")
        if P.NUM_CLIENTS not in reply.metrics:
            raise ValueError(f"a pre-summed reply must carry the metric {P.NUM_CLIENTS!r}")
        m = int(reply.metrics[P.NUM_CLIENTS])
        if reply.num_examples != m:
            raise UserError(f"user-level DP needs the uniform mean of the clients' clipped updates, but the "
                            f"secure aggregate weighs {m} clients by {reply.num_examples} examples: the secure "
                            f"transport must weigh each client 1 when the payloads carry {P.DP_CLIP!r}")
        return m


def private(algorithm: Algorithm, cfg: Any, noise_multiplier: Optional[float]) -> Algorithm:
    """``algorithm`` with the DP of ``cfg.privacy`` at ``noise_multiplier`` (a system's z), or
    ``algorithm`` itself when ``privacy.mode`` is off or ``noise_multiplier`` is None."""
    dp, fed = cfg.privacy, cfg.federated
    if dp.mode == "off" or noise_multiplier is None:
        return algorithm
    if getattr(fed, "secagg", False) and dp.mode != "client-fixed":
        raise UserError(f"privacy.mode = {dp.mode} needs each client's update norm, which federated.secagg "
                        "hides: use privacy.mode = client-fixed, or secagg = false")
    return PrivateAlgorithm(
        algorithm, mode=dp.mode, noise_multiplier=noise_multiplier, clipping_norm=dp.clipping_norm,
        delta=dp.delta, num_clients=fed.num_clients, clients_per_round=fed.clients_per_round, seed=cfg.seed,
        target_quantile=dp.target_quantile, clip_lr=dp.clip_lr,
        clipped_count_stddev=dp.clipped_count_stddev or None)
