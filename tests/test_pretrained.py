"""The shipped embedded checkpoints reproduce the upstream scores written in their model cards."""

import json

import pytest

from fedmllm.models import checkpoint_dir
from fedmllm.pretrain import CARD_EVAL_N

MODELS = ["tiny-llava-ov", "tiny-vila", "tiny-llava-ov-large"]


@pytest.mark.parametrize("name", MODELS)
def test_card_scores_reproduced(name):
    from fedmllm.data.suite import load_task
    from fedmllm.eval import evaluate
    from fedmllm.models import build_model

    card_file = checkpoint_dir(name) / "card.json"
    assert card_file.is_file(), f"{name} checkpoint missing: run `fedmllm pretrain`"
    card = json.loads(card_file.read_text())
    assert card["eval"]["n_per_task"] == CARD_EVAL_N
    bundle = build_model(name)  # the shipped weights
    sets = {t: load_task(t, "test", card["eval"]["n_per_task"], card["eval"]["seed"]) for t in card["upstream_tasks"]}
    scores = evaluate(bundle.model, bundle.processor, sets, batch_size=64)
    for task, expected in card["upstream_scores"].items():
        # Same weights, same samples: only float noise across machines could flip a token.
        assert scores[task].score == pytest.approx(expected, abs=3.5), task
    mean = sum(s.score for s in scores.values()) / len(scores)
    assert mean == pytest.approx(card["upstream_mean"], abs=1.0)


@pytest.mark.parametrize("name", MODELS)
def test_the_embedded_bases_hold_general_knowledge(name):
    """The target (>= 85 % on held-out upstream samples), read on the accuracy-type tasks of the
    card: CIDEr-D x 100 is unbounded and would inflate a plain mean."""
    card = json.loads((checkpoint_dir(name) / "card.json").read_text())
    assert card["upstream_mean_accuracy"] >= 85.0, "the embedded base must hold real general knowledge"
    # Captioning in real models' range (COCO ~100-140): the twin's human-like references put the
    # most common wording of the right objects at ~150, not the ~650 of templated references.
    assert 60.0 <= card["upstream_scores"]["synth-coco-caption"] <= 160.0


def test_the_large_base_has_7x_the_parameters_of_the_small_one_of_its_architecture():
    large, small = (json.loads((checkpoint_dir(n) / "card.json").read_text()) for n in ("tiny-llava-ov-large", "tiny-llava-ov"))
    assert large["params"] >= 7 * small["params"]


def test_the_large_base_knows_at_least_as_much_as_the_small_one_of_its_architecture():
    """The server model of the collaboration runs should know no less than the edge model it
    shares its architecture with, on the accuracy twins. Both sit at the twins' ceiling (99 +-
    1.6, one of 64 items per twin), so a margin is not measurable here: "at least level" within
    one item per twin is. That it learns more downstream is measured by benchmarks/large_base.py."""
    large, small = (json.loads((checkpoint_dir(n) / "card.json").read_text()) for n in ("tiny-llava-ov-large", "tiny-llava-ov"))
    one_item = 100.0 / large["eval"]["n_per_task"]
    assert large["upstream_mean_accuracy"] >= small["upstream_mean_accuracy"] - one_item
    assert min(s for t, s in large["upstream_scores"].items() if t != "synth-coco-caption") >= 90.0
