"""One edge-collaboration experiment, Flower-free: a large server model, small client models.

The clients hold the federated experiment's heterogeneous split of the downstream twins and train
the small model (``model.name``); the server holds the large model (``collab.large``) and a public
set (`fedmllm.collab.public`), the only data it sees. Each paradigm (`fedmllm.collab.base`) runs
through the federated core's round loop and transport, so it runs on Flower's Ray backend, resumes
from its last complete round and has its replies checked like any strategy. Measured per round in
``metrics.jsonl`` (``global_eval`` events carry ``side`` = large / small) and per paradigm in
``systems/<name>.json``: E and F of both sides against their own zero-shot scores, the small
models' personalized scores, bytes up / down per client and round, client compute (seconds, peak
memory) and the gap closed, (large after - large_zero) / (large_pooled - large_zero).
"""

from __future__ import annotations

import copy
import json
import shutil
from typing import Any, Optional

import numpy as np

from fedmllm.config import Config, dumps, method_options
from fedmllm.errors import UserError
from fedmllm.experiment import derive_seed
from fedmllm.federated import protocol as P
from fedmllm.federated.algorithms.base import Arrays
from fedmllm.federated.client import config_key
from fedmllm.federated.experiment import FederatedExperiment
from fedmllm.federated.results import system_result
from fedmllm.federated.rounds import LoopSettings, RoundLoop
from fedmllm.runs import write_json

BASELINE_ORDER = ("large_zero", "large_pooled", "small_fedavg")


def collab_order(cfg: Config) -> list[str]:
    """Baselines first (proxy needs small_fedavg's adapter, the gap needs large_pooled), then the
    paradigms in the config's order."""
    c = cfg.collab
    return [b for b in BASELINE_ORDER if b in c.baselines] + list(c.paradigms)


def large_config(cfg: Config) -> Config:
    """The experiment's config with the large model as ``model.name`` (the server's large side)."""
    out = copy.deepcopy(cfg)
    out.model.name = cfg.collab.large
    return out


class Sides:
    """What the server's collaboration step works with: both models, the public set, alignment."""

    def __init__(self, exp: "CollabExperiment"):
        from fedmllm.collab.outputs import answer_tokens
        from fedmllm.collab.public import public_samples

        self.exp, self.cfg = exp, exp.cfg
        self.large, self.small = exp.large, exp.server
        self.public = public_samples(exp.cfg)
        self.tokens = {side: answer_tokens(self.runtime(side).processor, self.public) for side in ("large", "small")}
        lt, st = self.large.processor.tokenizer, self.small.processor.tokenizer
        self.same_tokenizer = lt.get_vocab() == st.get_vocab()
        self.vmaps: dict[tuple[str, str], Optional[np.ndarray]] = {("large", "small"): None, ("small", "large"): None}
        if not self.same_tokenizer:
            from fedmllm.collab.align import vocab_map

            self.vmaps = {("large", "small"): vocab_map(lt, st), ("small", "large"): vocab_map(st, lt)}
        self._projectors: Optional[dict] = None
        self.emulator_plan = None

    def runtime(self, side: str):
        return self.large if side == "large" else self.small

    def width(self, side: str) -> int:
        model = self.runtime(side).base_model
        return int(model.config.text_config.hidden_size)

    def _settings(self, side: str, server_round: int, kd_weight: float):
        from fedmllm.collab.distill import PublicTraining

        c = self.cfg.collab
        return PublicTraining(steps=c.kd_steps, lr=c.kd_lr, batch_size=c.kd_batch_size, kd_weight=kd_weight,
                              temperature=c.temperature, seed=derive_seed(self.cfg.seed, "collab", side, server_round),
                              max_grad_norm=self.cfg.train.max_grad_norm)

    def outputs(self, side: str, state: Arrays) -> list:
        """``side``'s answer-position top-k on the public set with ``state`` loaded."""
        from fedmllm.collab.outputs import answer_outputs

        rt = self.runtime(side)
        return answer_outputs(rt.load(state).model, rt.processor, self.public, self.cfg.collab.top_k)

    def distill(self, student: str, state: Arrays, teacher_outputs: list, server_round: int,
                weights: Optional[np.ndarray] = None) -> tuple[Arrays, dict]:
        """``student``'s state tuned on the public set with CE + KD from ``teacher_outputs``."""
        from fedmllm.collab.distill import kd_targets, train_public

        teacher = "small" if student == "large" else "large"
        targets = kd_targets(teacher_outputs, self.tokens[student], self.vmaps[(teacher, student)])
        rt = self.runtime(student)
        new, stats = train_public(rt.load(state), rt.processor, self.public,
                                  self._settings(student, server_round, self.cfg.collab.kd_weight), targets, weights)
        if weights is not None:
            stats["taught"] = int(np.count_nonzero(weights))
        return new, stats

    def representations(self, side: str, state: Arrays) -> dict[str, np.ndarray]:
        from fedmllm.collab.outputs import pooled_representations

        rt = self.runtime(side)
        reps = pooled_representations(rt.load(state).model, rt.processor, self.public)
        return {k: v.numpy() for k, v in reps.items()}

    def base_representations(self) -> dict:
        """Both base models' pooled public-set representations (side -> key -> (P, d)), once."""
        if getattr(self, "_base_reps", None) is None:
            self._base_reps = {side: self.representations(side, self.runtime(side).initial_state())
                               for side in ("large", "small")}
        return self._base_reps

    def projectors(self) -> dict:
        """Ridge projectors between the two *base* models' public-set representations, both ways."""
        if self._projectors is None:
            import torch

            from fedmllm.collab.kd import fit_projector

            base = self.base_representations()
            out: dict = {"s2l": {}, "l2s": {}}
            for key in base["small"]:
                s, lg = torch.as_tensor(base["small"][key]), torch.as_tensor(base["large"][key])
                out["s2l"][key] = tuple(t.numpy() for t in fit_projector(s, lg))
                out["l2s"][key] = tuple(t.numpy() for t in fit_projector(lg, s))
            self._projectors = out
        return self._projectors

    def align(self, side: str, state: Arrays, targets: dict, server_round: int) -> tuple[Arrays, dict]:
        """``side``'s state tuned on the public set: (1 - kd_weight) x CE + align_weight x the
        representation loss between its pooled representations and ``targets`` (key -> (P, d))."""
        from fedmllm.collab.distill import train_public
        from fedmllm.collab.kd import representation_loss
        from fedmllm.collab.outputs import pooled_from

        c = self.cfg.collab
        rt = self.runtime(side)
        tuned = rt.load(state)

        def extra(out, batch, rows, idx):  # from the training step's own forward
            visual, hidden = pooled_from(tuned.model, out, batch, rows)
            reps = {"visual": visual, "hidden": hidden}
            terms = [representation_loss(reps[k], targets[k][idx].float(), c.align_loss) for k in targets]
            return c.align_weight * sum(terms) / len(terms)

        # the public CE keeps its weight 1 - kd_weight (kd_weight = 1: the alignment alone)
        return train_public(tuned, rt.processor, self.public,
                            self._settings(side, server_round, c.kd_weight), extra=extra)

    def emulator_split(self, keys: list[str]) -> tuple[list[str], list[str]]:
        from fedmllm.collab.emulator import adapter_keys

        return adapter_keys(keys, self.emulator_plan)

    def plug(self, large: Arrays, emulator_state: Arrays) -> Arrays:
        """The large LoRA state with the emulator's adapter layers plugged in."""
        from fedmllm.collab.emulator import plug_adapter

        plugged = plug_adapter(emulator_state, self.emulator_plan)
        unknown = sorted(set(plugged) - set(large))
        if unknown:
            raise RuntimeError(f"offsite: adapter keys {unknown[:3]} are not in the large model's LoRA state")
        return {**large, **plugged}


class CollabExperiment(FederatedExperiment):
    """Shared state of one collaboration experiment in the server process."""

    def __init__(self, cfg: Config, run, transport=None):
        super().__init__(cfg, run, transport)
        from fedmllm.federated.runtime import ServerRuntime
        from fedmllm.models import build_model

        lcfg = large_config(cfg)
        self.large = ServerRuntime(lcfg, self.data, build_model(lcfg.model.name, seed=cfg.seed))
        path = run.path / "zeroshot_large.json"
        if path.is_file():
            self.zero_large = json.loads(path.read_text())
        else:
            self.zero_large = self.large.zero_shot()
            write_json(path, self.zero_large)
            self.run.log({"event": "zeroshot", "side": "large", **self.zero_large["full"]})
        print("large zero-shot: " + ", ".join(f"{t} {s:.1f}" for t, s in self.zero_large["full"]["downstream"].items()),
              flush=True)
        self.sides = Sides(self)
        self._last_large: Optional[tuple] = None

    def order(self) -> list[str]:
        return collab_order(self.cfg)

    # --- running -----------------------------------------------------------------------------
    def run_all(self) -> dict:
        from fedmllm.faults import crash_point

        systems = []
        for name in self.order():
            if self.progress.get(name) is not None:
                systems.append(json.loads((self.run.path / "systems" / f"{name}.json").read_text()))
                continue
            if name == "large_zero":
                result = self.result(name, large=self.zero_large["full"])
            elif name == "large_pooled":
                result = self.large_pooled()
            elif name == "proxy":
                result = self.proxy()
            else:
                result = self.run_paradigm(name)
            systems.append(self.collab_done(name, result))
            crash_point(name, "done")
        return write_collab_results(self.run, systems)

    def collab_done(self, name: str, result: dict) -> dict:
        write_json(self.run.path / "systems" / f"{name}.json", result)
        self.run.log({"event": "system_done", "system": name,
                      **{f"{side}_{k}": result[side][k] for side in ("large", "small") if result.get(side)
                         for k in ("E", "F", "O")}})
        self.progress.mark(name)
        parts = [f"{side} E {result[side]['E']:+.1f} F {result[side]['F']:+.1f}"
                 for side in ("large", "small") if result.get(side)]
        print(f"[{name}] final: " + "; ".join(parts), flush=True)
        return result

    def result(self, name: str, *, large: Optional[dict] = None, small: Optional[dict] = None,
               extra: Optional[dict] = None) -> dict:
        from fedmllm.collab.base import PARADIGMS

        cls = PARADIGMS.get(name)
        out: dict[str, Any] = {"system": name, "family": cls.family, "description": cls.description,
                               "large_model": self.cfg.collab.large, "small_model": self.cfg.model.name}
        out["large"] = None if large is None else system_result(name, "collab", self.cfg.collab.large, large,
                                                                self.zero_large["full"])
        out["small"] = None if small is None else system_result(name, "collab", self.cfg.model.name, small,
                                                                self.zero["full"])
        if name in self.personal:
            out["personalized"] = self.personal[name]
        out.update(extra or {})
        return out

    def large_pooled(self) -> dict:
        """The large model's LoRA tuned on the union of the clients' data, in this process, with
        the clients' per-step semantics (constant lr, their batch size)."""
        import time

        from fedmllm.data.collate import encode_train
        from fedmllm.training.loop import loop_config, train_local

        fed, c = self.cfg.federated, self.cfg.collab
        samples = [s for pid in range(len(self.partition.clients)) for s in self.partition.samples(pid, self.data.train)]
        steps = c.large_steps or fed.rounds * fed.local_steps * fed.num_clients
        _, lr = method_options(self.cfg, fed.method)
        lr = c.large_lr or lr
        tuned = self.large.load(self.large.initial_state())
        t0 = time.perf_counter()
        stats = train_local(tuned.model, samples, lambda b: encode_train(self.large.processor, b),
                            loop_config(self.cfg.train, lr=lr, steps=steps, warmup_ratio=0.0, schedule="constant"),
                            seed=derive_seed(self.cfg.seed, "large_pooled"))
        from fedmllm.federated.algorithms.base import as_arrays

        state = as_arrays(tuned.method.get_state(tuned.model))
        seconds = time.perf_counter() - t0
        self.run.log({"event": "baseline_done", "system": "large_pooled", "steps": stats.steps,
                      "train_loss": float(stats.loss_mean), "seconds": seconds})
        self.save_large_adapter("large_pooled", state)
        return self.result("large_pooled", large=self.large_scores("large_pooled", state),
                           extra={"steps": stats.steps, "seconds": seconds})

    def large_scores(self, system: str, state: Arrays) -> dict:
        """Full evaluation of the large ``state`` (reusing the last round's when it was full)."""
        last = self._last_large
        if last is not None and last[0] == system and last[1] is state and last[3]:
            return last[2]
        return self.large.evaluate(state, upstream="full")

    def proxy(self) -> dict:
        """Decode-time proxy-tuning: the large base steered by small_fedavg's federated adapter."""
        import time

        from fedmllm.collab.proxy import proxy_generate
        from fedmllm.eval import evaluate

        ckpt = self.checkpoints.latest("small_fedavg")
        if ckpt is None:
            raise UserError("proxy needs small_fedavg's final adapter: add small_fedavg to collab.baselines")
        tuned = self.server.load(ckpt.global_state).model
        base = self.server.base_model
        large = self.large.base_model
        c, bs = self.cfg.collab, self.cfg.eval.batch_size

        def gen(samples, max_new_tokens):
            return proxy_generate(large, self.large.processor, tuned, base, self.server.processor, samples,
                                  max_new_tokens=max_new_tokens, batch_size=bs, alpha=c.proxy_alpha)

        t0 = time.perf_counter()
        down = evaluate(large, self.large.processor, self.data.test, batch_size=bs, generator=gen)
        up = evaluate(large, self.large.processor, self.large.upstream_sets["full"], batch_size=bs, generator=gen)
        scores = {"downstream": {t: float(r.score) for t, r in down.items()},
                  "upstream": {t: float(r.score) for t, r in up.items()}}
        small_fedavg = json.loads((self.run.path / "systems" / "small_fedavg.json").read_text()) \
            if (self.run.path / "systems" / "small_fedavg.json").is_file() else {}
        self.run.log({"event": "global_eval", "system": "proxy", "side": "large", "round": self.cfg.federated.rounds,
                      **scores})
        return self.result("proxy", large=scores, extra={
            "seconds_eval": time.perf_counter() - t0, "costs_from": "small_fedavg",
            **{k: small_fedavg.get(k) for k in ("bytes_up", "bytes_down", "bytes_up_per_client_round",
                                                "bytes_down_per_client_round", "rounds")}})

    def offsite_setup(self) -> tuple[Arrays, dict]:
        """The emulator checkpoint and its sub-experiment folder (config.toml with the emulator as
        model, the same partition files) the clients load; returns (initial emulator LoRA state,
        the loop's common config)."""
        from fedmllm.collab.emulator import build_emulator, plan_emulator, save_emulator
        from fedmllm.federated.tuned import TunedModels
        from fedmllm.models import build_model
        from fedmllm.runs import atomic_write

        c = self.cfg.collab
        layers = int(self.large.base_model.config.text_config.num_hidden_layers)
        plan = plan_emulator(layers, c.emulator_bottom, c.emulator_top, c.emulator_keep)
        self.sides.emulator_plan = plan
        root = self.run.path / "offsite"
        folder = root / "emulator"
        if not (folder / "emulator.json").is_file():
            tmp = root / ".emulator.partial"
            if tmp.exists():
                shutil.rmtree(tmp)
            import dataclasses

            large = build_model(c.large, seed=self.cfg.seed)
            save_emulator(dataclasses.replace(large, model=build_emulator(large.model, plan)), plan, tmp)
            tmp.rename(folder)
        sub = copy.deepcopy(self.cfg)
        sub.model.name = str(folder.resolve())
        text = dumps(sub)
        atomic_write(root / "config.toml", text)
        for name in ("partition.json", "partition_test.json", "meta.json"):
            if (self.run.path / name).is_file():
                shutil.copyfile(self.run.path / name, root / name)
        emulator = TunedModels(sub, build_model(sub.model.name, seed=self.cfg.seed)).get()
        common = {P.EXPERIMENT_ID: config_key(text), P.EXPERIMENT_DIR: str(root.resolve()),
                  P.CLIENT_STORE: str((root / "clients").resolve())}
        self.run.log({"event": "emulator", "layers": plan.emulator_layers(), "adapter": plan.adapter_layers(),
                      "large_layers": layers})
        return dict(emulator.initial), common

    def run_paradigm(self, name: str) -> dict:
        from fedmllm.collab.base import PARADIGMS
        from fedmllm.federated.experiment import loop_settings

        if self.transport is None:
            raise UserError(f"paradigm {name!r} needs a transport (run it through `fedmllm collab`)")
        fed = self.cfg.federated
        cls = PARADIGMS.get(name)
        algo = cls({}, num_clients=fed.num_clients)
        algo.bind(self.sides)
        base = loop_settings(self.cfg, "fedavg", self.run.path, self.partition)
        settings = LoopSettings(
            system=name, rounds=fed.rounds, num_clients=fed.num_clients, clients_per_round=fed.clients_per_round,
            seed=self.cfg.seed, local_steps=fed.local_steps, base_lr=base.base_lr, lr_decay=fed.lr_decay,
            max_failure_fraction=fed.max_failure_fraction, common_config=dict(base.common_config),
            client_sizes=base.client_sizes, max_update_norm=fed.max_update_norm)
        if cls.trains_small:
            initial = self.server.initial_state()
        else:  # offsite: the clients tune the emulator of the large model
            initial, settings.common_config = self.offsite_setup()
        costs: dict[str, list] = {"seconds": [], "peak": [], "up": [], "down": []}

        def after(server_round, before, replies, after_state):
            sec = [float(r.metrics.get(P.SECONDS, 0.0)) for r in replies]
            peak = [float(r.metrics.get(P.PEAK_RSS_MB, 0.0)) for r in replies]
            up = [int(r.metrics.get(P.BYTES_OUT, 0)) for r in replies]
            down = [int(r.metrics.get(P.BYTES_IN, 0)) for r in replies]
            costs["seconds"] += sec
            costs["peak"] += peak
            costs["up"] += up
            costs["down"] += down
            return {"client_seconds_mean": float(np.mean(sec)), "client_seconds_max": float(np.max(sec)),
                    "client_peak_rss_mb": float(np.max(peak)), "bytes_up_per_client": float(np.mean(up)),
                    "bytes_down_per_client": float(np.mean(down))}

        loop = RoundLoop(algo, self.transport, settings, log=self.run.log, metrics_size=self.progress.metrics_size,
                         checkpoints=self.checkpoints, after_aggregate=after,
                         evaluate=lambda r, state: self.evaluate_collab(name, r, state, algo, settings))
        final = loop.run(initial)
        t = loop.totals
        clients_rounds = fed.rounds * (fed.clients_per_round or fed.num_clients)  # the totals span every round
        extra = {"rounds": fed.rounds, "seconds": t["seconds"], "bytes_up": t["bytes_up"], "bytes_down": t["bytes_down"],
                 "bytes_up_per_client_round": t["bytes_up"] / clients_rounds,
                 "bytes_down_per_client_round": t["bytes_down"] / clients_rounds,
                 "client_seconds_mean": float(np.mean(costs["seconds"])) if costs["seconds"] else None,
                 "client_peak_rss_mb": float(np.max(costs["peak"])) if costs["peak"] else None}
        small = self.final_scores(name, final) if cls.trains_small else None
        large = self.large_scores(name, algo.large) if cls.large_changes else None
        if cls.trains_small:
            self.save_adapter(name, final, fed.rounds)
        if cls.large_changes:
            self.save_large_adapter(name, algo.large)
        return self.result(name, large=large, small=small, extra=extra)

    def save_large_adapter(self, name: str, state: Arrays) -> None:
        tuned = self.large.load(state)
        out = self.run.path / "adapters" / name / "large"
        tuned.method.save(tuned.model, out)

    def evaluate_collab(self, system: str, server_round: int, small_state: Arrays, algo, settings) -> None:
        """Per-round scores of both sides (downstream every eval_every rounds, the upstream
        subsample every upstream_every and in the last round), and the clients' own models."""
        from fedmllm.metrics.efo import forgetting

        fed = self.cfg.federated
        if server_round % fed.eval_every and server_round != fed.rounds:
            return
        upstream = "small" if server_round % fed.upstream_every == 0 or server_round == fed.rounds else None
        small_full = all(len(self.server.upstream_sets["small"][t]) == len(v)
                         for t, v in self.server.upstream_sets["full"].items())
        line = []
        for side, state, rt, zero in (("small", small_state, self.server, self.zero),
                                      ("large", algo.large, self.large, self.zero_large)):
            if (side == "small" and not algo.trains_small) or (side == "large" and not algo.large_changes):
                continue
            scores = rt.evaluate(state, upstream=upstream)
            event: dict[str, Any] = {"event": "global_eval", "system": system, "side": side, "round": server_round,
                                     **scores, "E": {t: scores["downstream"][t] - zero["full"]["downstream"][t]
                                                     for t in scores["downstream"]}}
            if upstream:
                event["F"] = forgetting(scores["upstream"], zero["small"]["upstream"])
            self.run.log(event)
            if side == "small":
                self._last_eval = (system, state, scores, "full" if small_full else "small") if upstream else None
                if fed.eval_personalized and hasattr(self.transport, "evaluate"):
                    self.personalized_round(system, server_round, state, algo, settings)
            else:
                self._last_large = (system, state, scores, bool(upstream) and small_full)
            mean = sum(scores["downstream"].values()) / len(scores["downstream"])
            line.append(f"{side} downstream {mean:.1f}" + (f" F {event['F']:+.1f}" if "F" in event else ""))
        print(f"[{system}] round {server_round}/{fed.rounds}: " + "; ".join(line), flush=True)


def write_collab_results(run, systems: list[dict]) -> dict:
    """results.json with the gap closed per paradigm, and the report."""
    by = {s["system"]: s for s in systems}

    def mean_down(s):
        return None if not s or not s.get("large") else s["large"]["downstream_mean"]

    zero, pooled = mean_down(by.get("large_zero")), mean_down(by.get("large_pooled"))
    for s in systems:
        after = mean_down(s)
        s["gap_closed"] = None if None in (zero, pooled, after) or abs(pooled - zero) < 1e-9 else \
            (after - zero) / (pooled - zero)
    results = {"kind": "collab", "systems": systems}
    write_json(run.path / "results.json", results)
    from fedmllm.report.collab import write_report

    write_report(run.path)
    return results
