"""GPU readiness check, one script of at most 8 minutes: LoRA training of the real-size
LLaVA-OneVision-0.5B architecture, then a federated LoRA run with fractional GPUs on Ray.

1. **Training.** `LlavaOnevisionForConditionalGeneration` built from the config of
   ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` (values written out in `REAL`: the GPU machine has
   no internet; random weights), the project's ``lora`` method (r=8, alpha=16 on the LLM's
   attention and MLP projections, vision tower frozen), the project's `train_local` at the
   paper's batch size 16 with ``train.precision = auto`` (bf16 autocast on CUDA, fp32 master
   weights). A sample is one 384 x 384 image (anyres: the base crop and one tile, 1485 image
   tokens, counted by the real processor logic) plus 64 text tokens, the loss on the last 8.
   Reported: ``tokens_per_s`` (LLM positions per second), ``peak_mem_gb``
   (``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS) and ``mfu``.
   A CUDA out-of-memory error retries with gradient accumulation (same batch 16, smaller micro-batches).
2. **Federated.** ``fedmllm federated`` (``python -m simulations.cli federated``) with 4 clients x
   2 rounds of FedAvg-LoRA on the embedded ``tiny-vila``, ``federated.num_gpus_per_client = 0.25``:
   four Ray actors share the GPU, each with its own base model. ``federated_gpu_processes`` is the
   most processes ``nvidia-smi`` saw on the GPU at once during the run (the actors, the driver; a
   container may hide them), ``federated_gpu_mem_gb`` the most GPU memory in use beyond this
   process's own at the start.

MFU = 6 N tokens_per_s / peak, N = every parameter (vision tower, projector, LLM; frozen ones
included), the standard training approximation (forward 2N + backward 4N FLOPs per token; Kaplan et
al. 2020, PaLM appendix B), attention's quadratic term left out; peak = the GPU's dense bf16
tensor-core peak from `PEAK_BF16_TFLOPS` (unknown GPU: null). A LoRA step executes less than 6N
per token (no weight gradients for frozen weights, no backward through the frozen vision tower), so
this MFU is the model-FLOPs convention, not the hardware's measured utilisation.

Without CUDA (or with ``--scaled-down``) the same steps run on a scaled-down architecture (`CPU`:
widths / 8, 3 layers, 112 px images), batch 2, a few steps, the federated part on CPU (the JSON says
``"scaled_down": true``); ``--smoke`` is the test's smaller form (`SMOKE`, one step, 2 clients x 1
round in-process). The LAST line printed is one JSON object.

    .venv/bin/python benchmarks/gpu_check.py [--scaled-down] [--smoke] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
IMAGE_TOKEN, VIDEO_TOKEN = 151646, 151647  # llava-onevision-qwen2-*-ov-hf image/video token ids
# Dense (no sparsity) bf16 tensor-core peaks, TFLOPS, from NVIDIA's data sheets; first match of
# torch.cuda.get_device_name() wins (so "H100 PCIe" before "H100", "L40S" / "L40" before "L4").
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0),
                    ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0))


@dataclass(frozen=True)
class Size:
    """One architecture size: SigLIP vision tower and Qwen2 LLM settings, the batch and steps."""

    name: str
    vision: dict
    text: dict
    batch_size: int
    steps: int
    warmup_steps: int
    text_tokens: int = 64
    answer_tokens: int = 8
    pinpoints: list | None = None  # None: LlavaOnevisionConfig's default anyres_max_9 grid
    federated: dict = field(default_factory=lambda: {"clients": 4, "rounds": 2, "backend": "ray"})


# llava-hf/llava-onevision-qwen2-0.5b-ov-hf config.json: Qwen2-0.5B(-Instruct) text model, and the
# SigLIP so400m-patch14-384 vision tower with its last layer dropped (26 of 27 layers: LLaVA-OV
# takes the penultimate features), which is also LlavaOnevisionConfig's own vision default.
REAL = Size(
    name="llava-onevision-qwen2-0.5b (real size, random weights)",
    vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                image_size=384, patch_size=14, vision_use_head=False),
    text=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2, vocab_size=152000, max_position_embeddings=32768, rms_norm_eps=1e-6,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True),
    batch_size=16, steps=10, warmup_steps=2,
)
CPU = Size(  # widths / 8 (head sizes kept near the real 72 / 64), 3 layers, 112 px (8 x 8 patches)
    name="llava-onevision-qwen2-0.5b scaled down (widths / 8, 3 layers, 112 px)",
    vision=dict(REAL.vision, hidden_size=144, intermediate_size=538, num_hidden_layers=3, num_attention_heads=2,
                image_size=112),
    text=dict(REAL.text, hidden_size=112, intermediate_size=608, num_hidden_layers=3, num_attention_heads=2,
              num_key_value_heads=1, vocab_size=19000),
    batch_size=2, steps=3, warmup_steps=1, pinpoints=[[112, 112]],
)
SMOKE = Size(  # the test's form: one layer each, one timed step, 2 clients x 1 round in-process
    name="llava-onevision-qwen2-0.5b smoke size (1 layer, 56 px)",
    vision=dict(CPU.vision, hidden_size=32, intermediate_size=64, num_hidden_layers=1, image_size=56),
    text=dict(CPU.text, hidden_size=32, intermediate_size=64, num_hidden_layers=1, vocab_size=2048),
    batch_size=2, steps=1, warmup_steps=1, text_tokens=16, answer_tokens=4, pinpoints=[[56, 56]],
    federated={"clients": 2, "rounds": 1, "backend": "inprocess"},
)


def build(size: Size, device: torch.device):
    """The seeded random-init model (built on ``device``) and a processor whose image-token count
    is the real one (LLaVA-OV's anyres logic; the suite tokenizer stands in for Qwen2's)."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionProcessor, Qwen2Config, SiglipVisionConfig)
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from fedmllm.models.processors import without_video
    from fedmllm.models.tiny_common import suite_tokenizer

    extra = {} if size.pinpoints is None else {"image_grid_pinpoints": size.pinpoints}
    vocab = size.text["vocab_size"]
    image_id, video_id = (IMAGE_TOKEN, VIDEO_TOKEN) if vocab > VIDEO_TOKEN else (vocab - 2, vocab - 1)
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**size.vision), text_config=Qwen2Config(**size.text),
        image_token_index=image_id, video_token_index=video_id,
        projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9", tie_word_embeddings=size.text["tie_word_embeddings"], **extra)
    torch.manual_seed(0)
    with device:
        model = LlavaOnevisionForConditionalGeneration(config)
    tok, image = suite_tokenizer(), size.vision["image_size"]
    processor = without_video(LlavaOnevisionProcessor)(
        image_processor=LlavaOnevisionImageProcessorPil(size={"height": image, "width": image},
                                                        image_grid_pinpoints=config.image_grid_pinpoints,
                                                        image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tok, num_image_tokens=(image // size.vision["patch_size"]) ** 2,
        vision_feature_select_strategy="full", chat_template=tok.chat_template, image_token=tok.image_token,
        video_token=tok.video_token, vision_aspect_ratio="anyres_max_9")
    return model, processor


def batches(size: Size, model, processor, micro: int, count: int) -> tuple[list[dict], int]:
    """``count`` micro-batches of ``micro`` samples (one image + text tokens each), and the
    sequence length. Token ids are random; the image tokens sit where a chat prompt puts them."""
    import numpy as np
    from PIL import Image

    image = size.vision["image_size"]
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (image, image, 3), dtype=np.uint8))
    enc = processor(images=[pil], text=[processor.tokenizer.image_token], return_tensors="pt")
    n_image = int((enc["input_ids"] == processor.tokenizer.image_token_id).sum())
    cfg, gen = model.config, torch.Generator().manual_seed(0)
    special = min(cfg.image_token_index, cfg.video_token_index)  # text ids stay below the special ids
    out = []
    for _ in range(count):
        text = torch.randint(0, special, (micro, size.text_tokens), generator=gen)
        ids = torch.cat([text[:, :8], torch.full((micro, n_image), cfg.image_token_index), text[:, 8:]], dim=1)
        labels = torch.full_like(ids, -100)
        labels[:, -size.answer_tokens:] = ids[:, -size.answer_tokens:]
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                    "pixel_values": enc["pixel_values"].expand(micro, *enc["pixel_values"].shape[1:]).contiguous(),
                    "image_sizes": enc["image_sizes"].expand(micro, 2).contiguous()})
    return out, ids.shape[1]


def peak_tflops(name: str) -> float | None:
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def train_benchmark(size: Size, device: torch.device, steps: int) -> dict:
    """Tokens/s, peak memory and MFU of `train_local` on ``size`` (see the module docstring)."""
    from fedmllm.methods import apply_method, trainable_summary
    from fedmllm.training import TrainConfig, train_local

    model, processor = build(size, device)
    model, _, _ = apply_method(model, "lora", {"r": 8, "alpha": 16.0}, seed=0)
    counts = trainable_summary(model)
    total = sum(p.numel() for p in model.parameters())
    grad_accum = 1
    while True:
        micro = size.batch_size // grad_accum
        data, seq = batches(size, model, processor, micro, grad_accum)
        # Each "sample" of the loop is one precomputed micro-batch (collate is a lookup).
        cfg = lambda n: TrainConfig(lr=1e-4, steps=n, batch_size=1, grad_accum=grad_accum,  # noqa: E731
                                    schedule="constant", max_grad_norm=1.0, precision="auto")
        try:
            train_local(model, data, lambda s: s[0], cfg(size.warmup_steps), seed=0)  # kernels, allocator
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            stats = train_local(model, data, lambda s: s[0], cfg(steps), seed=1)
            break
        except torch.cuda.OutOfMemoryError:
            if micro == 1:
                raise
            torch.cuda.empty_cache()
            grad_accum *= 2
    if device.type == "cuda":
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
    else:  # ru_maxrss is KiB on Linux
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    tokens_per_s = steps * size.batch_size * seq / stats.seconds
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(name) if device.type == "cuda" else None
    del model, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"model": size.name, "params_total": total, "params_trainable": counts["trainable"],
            "batch_size": size.batch_size, "grad_accum": grad_accum, "seq_len": seq,
            "image_tokens": seq - size.text_tokens, "steps": steps, "step_seconds": stats.seconds / steps,
            "loss_last": stats.loss_last, "tokens_per_s": tokens_per_s, "peak_mem_gb": peak_gb,
            "peak_mem_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss",
            "precision": "bf16 autocast" if device.type == "cuda" else "fp32", "device_name": name,
            "peak_bf16_tflops": peak, "mfu": 6 * total * tokens_per_s / (peak * 1e12) if peak else None,
            "mfu_formula": "6 * params_total * tokens_per_s / peak_bf16_flops"}


def gpu_processes() -> int | None:
    """How many processes use a GPU now (nvidia-smi), None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return len({line.strip() for line in out.splitlines() if line.strip()})


def federated_check(size: Size, gpus_per_client: float, timeout: float) -> dict:
    """``fedmllm federated`` on the embedded tiny model: seconds, rounds done, GPU processes."""
    fed = size.federated
    folder = Path(tempfile.mkdtemp(prefix="fedmllm_gpu_check_"))
    run = folder / "run"
    overrides = ["model.name=tiny-vila", "data.train_n=16", "data.test_n=8", "data.upstream_n=8",
                 "train.batch_size=8", "eval.batch_size=32", f"federated.num_clients={fed['clients']}",
                 f"federated.rounds={fed['rounds']}", "federated.local_steps=4", 'federated.strategies=["fedavg"]',
                 "federated.baselines=[]", "federated.partitioner=iid", "federated.upstream_n=4",
                 "federated.eval_every=1", f"federated.upstream_every={fed['rounds']}", "tracking=[]",
                 f"federated.backend={fed['backend']}", f"federated.num_gpus_per_client={gpus_per_client}"]
    if fed["backend"] == "ray":
        overrides.append("federated.ray_address=local")  # a fresh local Ray, whatever $RAY_ADDRESS says
    cmd = [sys.executable, "-m", "simulations.cli", "federated", "--out", str(run), *overrides]
    seen, used, done = [], [], threading.Event()
    cuda = torch.cuda.is_available() and gpus_per_client > 0
    before = _gpu_used() if cuda else 0

    def watch() -> None:  # nvidia-smi may not see PIDs inside a container: also the GPU's used memory
        while not done.is_set():
            n = gpu_processes()
            if n is not None:
                seen.append(n)
            if cuda:
                used.append(_gpu_used() - before)
            done.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    watcher.start()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    finally:
        done.set()
        watcher.join()
    seconds = time.perf_counter() - start
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"`fedmllm federated` failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rounds = [e for e in events if e.get("event") == "round"]
    return {"federated_seconds": seconds, "federated_backend": fed["backend"], "federated_clients": fed["clients"],
            "federated_rounds": fed["rounds"], "federated_gpus_per_client": gpus_per_client,
            "federated_rounds_done": len(rounds), "federated_clients_per_round": [e["clients"] for e in rounds],
            "federated_gpu_processes": max(seen) if seen else None,
            "federated_gpu_mem_gb": max(used) / 2**30 if used else None}


def _gpu_used() -> int:
    """Bytes in use on the current GPU by every process (the driver's view)."""
    free, total = torch.cuda.mem_get_info()
    return total - free


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scaled-down", action="store_true", help="the CPU sizes even where CUDA exists")
    parser.add_argument("--smoke", action="store_true", help="the test's smallest form (implies --scaled-down)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default: the size's)")
    parser.add_argument("--federated-timeout", type=float, default=300.0, help="seconds for the federated run")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cuda = torch.cuda.is_available() and not (args.scaled_down or args.smoke)
    device = torch.device("cuda" if cuda else "cpu")
    size = REAL if cuda else SMOKE if args.smoke else CPU
    if not cuda:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = {"device": device.type, "scaled_down": not cuda}
    out.update(train_benchmark(size, device, args.steps or size.steps))
    out["train_seconds"] = time.perf_counter() - start
    out.update(federated_check(size, 0.25 if cuda else 0.0, args.federated_timeout))
    out["total_seconds"] = time.perf_counter() - start
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
