"""`pretrain.init`: a second pretraining stage continues a checkpoint instead of a random init."""

import json

import torch
from safetensors.torch import load_file

from simulations.cli import main

TINY = ["pretrain.models=tiny-vila", "data.train_n=8", "train.steps=3", "train.batch_size=4",
        "train.lr=1e-2"]


def test_a_second_stage_continues_the_first_and_keeps_its_card(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "one"), *TINY, "pretrain.vision_warmup_steps=1"]) == 0
    first = tmp_path / "one" / "tiny-vila"
    assert main(["pretrain", "--out", str(tmp_path / "two"), *TINY, "pretrain.vision_warmup_steps=0",
                 f"pretrain.init={first}"]) == 0
    second = tmp_path / "two" / "tiny-vila"
    card_one = json.loads((first / "card.json").read_text())
    card_two = json.loads((second / "card.json").read_text())
    assert card_two["init"] == {"from": str(first), "card": card_one}
    assert card_two["vision_warmup"]["steps"] == 0 and "init" not in card_one
    assert "continued from" in (second / "MODEL_CARD.md").read_text()
    # The same tokenizer, the weights moved on...
    assert (second / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    w1, w2 = (load_file(str(d / "model.safetensors")) for d in (first, second))
    assert w1.keys() == w2.keys()
    moved = [k for k in w1 if not torch.equal(w1[k], w2[k])]
    assert len(moved) > len(w1) // 2, "the second stage trained the loaded weights"
    # ...starting from them, not from a new random init: the step-0 loss is the first stage's end.
    assert card_two["train_loss_first"] < card_one["train_loss_first"]
