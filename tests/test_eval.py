"""Generation and evaluation on the tiny models (random init, plus one memorisation run)."""

from __future__ import annotations

import json

import pytest
import torch

import fedmllm.metrics  # noqa: F401  (registers the metrics)
from fedmllm.data.collate import chat_prompt, chat_prompts, encode_generate, encode_train
from fedmllm.data.registry import TASKS
from fedmllm.data.synth import suite_texts  # noqa: F401  (registers the synthetic tasks)
from fedmllm.eval import TaskScore, evaluate, generate, write_scores
from fedmllm.eval.generate import _batch_order
from fedmllm.metrics.base import METRICS
from fedmllm.models.registry import build_model

EVAL_TASKS = ("synth-gqa", "synth-okvqa", "synth-scienceqa", "synth-coco-caption", "synth-mme")


@pytest.fixture(scope="module", params=("tiny-llava-ov", "tiny-vila"))
def bundle(request):
    return build_model(request.param, pretrained=False, seed=0)


@pytest.fixture(scope="module")
def mixed():
    return [s for name in ("synth-scienceqa", "synth-gqa", "synth-coco-caption")
            for s in TASKS.get(name).load("test", n=3, seed=2)]


def test_batched_equals_one_by_one_and_restores_mode(bundle, mixed):
    bundle.model.train()
    batched = generate(bundle.model, bundle.processor, mixed, batch_size=4, max_new_tokens=6)
    assert bundle.model.training
    bundle.model.eval()
    single = generate(bundle.model, bundle.processor, mixed, batch_size=1, max_new_tokens=6)
    assert not bundle.model.training
    assert batched == single
    assert all(isinstance(t, str) and len(t.split()) <= 6 for t in batched)


def test_first_new_token_is_the_forward_argmax(bundle, mixed):
    """Only new tokens come back: the first answer word is the argmax after the prompt."""
    tok = bundle.processor.tokenizer
    for sample in mixed[:4]:
        with torch.inference_mode():
            logits = bundle.model(**encode_generate(bundle.processor, [sample])).logits
        first = tok.decode([int(logits[0, -1].argmax())], skip_special_tokens=True)
        answer = generate(bundle.model, bundle.processor, [sample], max_new_tokens=3)[0]
        assert answer.split()[:1] == first.split()[:1]


def test_evaluate_scores_with_the_task_metric(bundle):
    by_task = {name: TASKS.get(name).load("test", n=4, seed=1) for name in EVAL_TASKS}
    scores = evaluate(bundle.model, bundle.processor, by_task, batch_size=3)
    assert list(scores) == list(EVAL_TASKS)
    for name, result in scores.items():
        task = TASKS.get(name)
        assert isinstance(result, TaskScore)
        assert result.task == name and result.metric == task.metric and result.n == 4
        assert result.uids == [s.uid for s in by_task[name]]
        assert result.predictions == [task.parse(r, s) for r, s in zip(result.raw, by_task[name])]
        assert all(len(r.split()) <= task.max_new_tokens for r in result.raw)
        again = METRICS.get(task.metric).compute(result.predictions, by_task[name])
        assert result.score == pytest.approx(again["score"])
        assert result.scores == pytest.approx({k: v for k, v in again.items() if k != "score"})


def test_evaluate_after_memorising_a_task(tmp_path):
    """Train tiny-vila until it reproduces 8 GQA-twin answers: evaluate must then score 100."""
    bundle = build_model("tiny-vila", pretrained=False, seed=0)
    samples = TASKS.get("synth-gqa").load("train", n=8, seed=0)
    before = evaluate(bundle.model, bundle.processor, {"synth-gqa": samples})["synth-gqa"]
    batch = encode_train(bundle.processor, samples)
    model = bundle.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.02
    after = evaluate(model, bundle.processor, {"synth-gqa": samples})
    assert model.training
    assert before.score < 100.0 == after["synth-gqa"].score
    assert after["synth-gqa"].predictions == [s.answers[0] for s in samples]
    path = write_scores(after, tmp_path / "scores" / "eval.json")
    data = json.loads(path.read_text())
    assert data["synth-gqa"]["score"] == 100.0 and data["synth-gqa"]["metric"] == "exact_match"
    assert data["synth-gqa"]["predictions"] == after["synth-gqa"].predictions


def test_generate_rejects_bad_batch_size(bundle, mixed):
    with pytest.raises(ValueError, match="batch_size"):
        generate(bundle.model, bundle.processor, mixed, batch_size=0)


def _full_forward_greedy(model, processor, samples, max_new_tokens):
    """The reference: one sample at a time (no padding), a full forward of the whole sequence per
    new token (no KV cache), argmax of the last position, until the end-of-sequence token."""
    eos = processor.tokenizer.eos_token_id
    out = []
    with torch.inference_mode():
        for s in samples:
            batch = encode_generate(processor, [s])
            ids, new = batch["input_ids"], []
            for _ in range(max_new_tokens):
                logits = model(**{**batch, "input_ids": ids, "attention_mask": torch.ones_like(ids)},
                               use_cache=False).logits
                new.append(int(logits[0, -1].argmax()))
                if new[-1] == eos:
                    break
                ids = torch.cat([ids, torch.tensor([[new[-1]]])], dim=1)
            out.append(processor.tokenizer.decode(new, skip_special_tokens=True).strip())
    return out


@pytest.mark.parametrize("method", ["none", "lora", "prompt"])
def test_batched_greedy_equals_full_forward_greedy(method):
    """The shipped tiny-llava-ov (answers of varying length: captions beside one-word answers), as
    it is, LoRA-wrapped with a non-zero B (peft forwards our cache and logits_to_keep), and prompt
    tuning (our soft-prompt path): batched, left-padded, KV-cached answers equal the no-cache
    one-sample reference. (peft 0.21's own generate fails this for prompt tuning under
    transformers 5: its answers drift from the second token on.)"""
    from fedmllm.methods.base import apply_method

    bundle = build_model("tiny-llava-ov")
    model = bundle.model
    if method != "none":
        model, _, _ = apply_method(model, method, {})
        torch.manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.requires_grad and "lora_B" in name:
                    p.normal_(0, 0.05)
    samples = [s for name in ("synth-coco-caption", "synth-gqa", "synth-scienceqa", "synth-flickr30k")
               for s in TASKS.get(name).load("test", n=4, seed=3)]
    ours = generate(model, bundle.processor, samples, batch_size=8, max_new_tokens=12)
    assert ours == _full_forward_greedy(model, bundle.processor, samples, 12)
    assert len({len(a.split()) for a in ours}) > 1  # rows did finish at different steps


def test_finished_rows_leave_the_batch():
    """Decode-step forwards see fewer rows once short answers end (the KV cache shrinks with them)."""
    bundle = build_model("tiny-llava-ov")
    samples = [s for name in ("synth-gqa", "synth-coco-caption") for s in TASKS.get(name).load("test", n=4, seed=3)]
    rows = []
    hook = bundle.model.register_forward_pre_hook(lambda m, a, k: rows.append(k["input_ids"].shape), with_kwargs=True)
    try:
        answers = generate(bundle.model, bundle.processor, samples, batch_size=8, max_new_tokens=12)
    finally:
        hook.remove()
    assert rows[0][0] == 8 and rows[0][1] > 1  # the prefill: every prompt
    steps = [r[0] for r in rows[1:]]
    assert all(r[1] == 1 for r in rows[1:]) and steps == sorted(steps, reverse=True)
    assert steps[-1] < 8  # the one-word answers finished first
    assert max(len(a.split()) for a in answers) > 1


def test_chat_prompts_equal_one_template_call_per_sample(bundle):
    samples = [s for name in sorted(TASKS) if name.startswith("synth-")
               for s in TASKS.get(name).load("test", n=2, seed=5)]
    one_by_one = [bundle.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": TASKS.get(s.task).prompt(s)}]}],
        add_generation_prompt=True, tokenize=False) for s in samples]
    assert chat_prompts(bundle.processor, samples) == one_by_one
    assert chat_prompt(bundle.processor, samples[3]) == one_by_one[3]
    assert chat_prompts(bundle.processor, []) == []


def test_batches_keep_long_answer_budgets_together(bundle):
    """A pool mixing captions (24 new tokens) with one-word tasks (4) is batched short budgets
    first, by prompt length within a budget: the captions share batches, the rest end early."""
    samples = [s for name in ("synth-coco-caption", "synth-scienceqa", "synth-gqa")
               for s in TASKS.get(name).load("test", n=4, seed=6)]
    prompts = chat_prompts(bundle.processor, samples)
    order = _batch_order(bundle.processor, samples, prompts)
    assert sorted(order) == list(range(len(samples)))
    budgets = [TASKS.get(samples[i].task).max_new_tokens for i in order]
    assert budgets == sorted(budgets) and budgets[-1] > budgets[0]
    assert {samples[i].task for i in order[-4:]} == {"synth-coco-caption"}
    lengths = [len(bundle.processor.tokenizer(prompts[i], add_special_tokens=False)["input_ids"]) for i in order[:8]]
    assert lengths == sorted(lengths)
    batched = generate(bundle.model, bundle.processor, samples, batch_size=4, max_new_tokens=6)
    assert batched == generate(bundle.model, bundle.processor, samples, batch_size=1, max_new_tokens=6)
