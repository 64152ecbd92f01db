"""The GPU path without a GPU: `benchmarks/gpu_check.py` (its smoke form end to end, its real-size
config built on the meta device and, at real widths with one layer, run forward on CPU), the
client resources and device settings (`federated.num_gpus_per_client`, `train.device`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedmllm.config import load_config
from fedmllm.errors import UserError
from fedmllm.training.loop import resolve_device
from simulations.federated import check_resources
from simulations.ray_backend import backend_config

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = sys.modules.setdefault("gpu_check", importlib.util.module_from_spec(_SPEC))  # dataclasses look it up
_SPEC.loader.exec_module(gpu_check)


def test_the_peak_table_matches_device_names_most_specific_first():
    names = {"NVIDIA H100 PCIe": 756.0, "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H200": 989.0,
             "NVIDIA GH200 480GB": 989.0, "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA L40S": 362.0,
             "NVIDIA L4": 121.0, "Tesla T4": None}
    assert {n: gpu_check.peak_tflops(n) for n in names} == names


def test_the_real_size_config_builds_with_llava_onevision_0_5b_parameter_counts():
    """On the meta device (no memory): SigLIP so400m minus its last layer ~0.40B, Qwen2-0.5B 0.49B
    (tied embeddings), the projector 1.8M; 1485 image tokens for a 384 px image (base + one tile)."""
    model, processor = gpu_check.build(gpu_check.REAL, torch.device("meta"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    inner = model.model
    assert 0.39e9 < count(inner.vision_tower) < 0.41e9
    assert 0.49e9 < count(inner.language_model) < 0.50e9  # embeddings counted once (tied lm_head)
    assert count(inner.multi_modal_projector) == 1152 * 896 + 896 + 896 * 896 + 896
    assert model.lm_head.weight is inner.language_model.embed_tokens.weight
    (batch,), seq = gpu_check.batches(gpu_check.REAL, model, processor, micro=1, count=1)
    assert seq == 1485 + gpu_check.REAL.text_tokens
    assert tuple(batch["pixel_values"].shape) == (1, 2, 3, 384, 384)


def test_real_widths_with_one_layer_run_forward_with_the_counted_image_tokens():
    """The model's own feature count must equal the processor's (else LLaVA-OV's forward raises):
    real widths, image size and patch; one layer each and a small vocabulary to stay fast."""
    size = dataclasses.replace(gpu_check.REAL, vision=dict(gpu_check.REAL.vision, num_hidden_layers=1),
                               text=dict(gpu_check.REAL.text, num_hidden_layers=1, vocab_size=1000))
    model, processor = gpu_check.build(size, torch.device("cpu"))
    (batch,), _ = gpu_check.batches(size, model, processor, micro=1, count=1)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


@pytest.mark.slow
def test_the_smoke_form_prints_one_json_line_with_the_measures():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["device"], out["scaled_down"], out["mfu"], out["peak_bf16_tflops"]) == ("cpu", True, None, None)
    assert out["tokens_per_s"] > 0 and out["peak_mem_gb"] > 0 and out["params_trainable"] > 0
    assert out["image_tokens"] == 16 + 16 + 4  # 56 px / 14 px patches: base 4x4, one 4x4 tile + 4 newlines
    assert (out["federated_rounds_done"], out["federated_clients_per_round"]) == (1, [2])
    assert out["federated_seconds"] > 0


def test_gpus_per_client_reach_rays_client_resources_and_are_checked(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = load_config(None, ["federated.num_gpus_per_client=0.25"])
    assert backend_config(cfg, "/tmp/x")["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.25}
    with pytest.raises(UserError, match="num_gpus_per_client' must be >= 0"):
        load_config(None, ["federated.num_gpus_per_client=-1"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU, and torch sees none"):
        check_resources(cfg)
    with pytest.raises(UserError, match='train.device = "cpu"'):
        check_resources(load_config(None, ["federated.num_gpus_per_client=0.5", "train.device=cpu"]))
    with pytest.raises(UserError, match="needs federated.num_gpus_per_client > 0"):
        check_resources(load_config(None, ["train.device=cuda"]))
    check_resources(load_config(None, ["federated.num_gpus_per_client=0.25", "federated.backend=inprocess"]))


def test_the_device_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="train.device"):
        load_config(None, ["train.device=gpu"])
