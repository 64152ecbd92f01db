"""Where CIDEr-D x 100 lands on the caption twins' references (no model involved).

For each caption twin (test split, ``--n`` images, ``--seed``) it scores, against each image's
five references, captions whose quality is known:

- ``human``: leave-one-out, reference 1 against the other four (the annotators' agreement; the
  idf is over the four);
- ``modal``: the grammar's most common wording of the right objects (what a well-trained model's
  greedy decoding approaches, e.g. "a red circle and a green square");
- ``random_train``: a random training caption (the chance floor the reports show);
- ``other_image``: the modal caption of the next image;
- ``wrong_objects``: the modal wording with every object replaced by a wrong one.

The issue's targets: a pretrained base on synth-coco-caption within 60-160, a model tuned on
synth-flickr30k at most ~200, wrong objects ~0. Prints one JSON line per twin.

Usage: ``python benchmarks/caption_refs.py [--n 128] [--seed 1]``
"""

from __future__ import annotations

import argparse
import json
import random

import fedmllm.data.synth  # noqa: F401  (registers the twins)
from fedmllm.data.registry import TASKS
from fedmllm.data.synth import coco_caption, flickr30k
from fedmllm.data.synth.draw import COLORS, SHAPES
from fedmllm.data.synth.flickr30k import SUBJECTS, THINGS
from fedmllm.metrics.cider_d import cider_d

PLAIN = {"synth-coco-caption": coco_caption.plain_caption, "synth-flickr30k": flickr30k.plain_caption}


def wrong(task: str, objects, rng: random.Random):
    if task == "synth-coco-caption":
        return [[rng.choice([c for c in COLORS if c not in (o[0] for o in objects)]),
                 rng.choice([s for s in SHAPES if s not in (o[1] for o in objects)])] for o in objects]
    subject, thing, time = objects
    return [rng.choice([s for s in SUBJECTS if s != subject]),
            rng.choice([t for t in THINGS if t != thing]), "night" if time == "day" else "day"]


def score(cands: list[str], refs: list[list[str]]) -> float:
    return round(100.0 * cider_d(cands, refs)[0], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for name in ("synth-coco-caption", "synth-flickr30k"):
        task = TASKS.get(name)
        test = task.load("test", n=args.n, seed=args.seed)
        train = task.load("train", n=args.n, seed=args.seed)
        refs = [s.answers for s in test]
        objects = [s.meta["objects"] for s in test]
        rng, modal = random.Random(0), PLAIN[name]
        out = {
            "task": name, "n": args.n,
            "human": score([r[0] for r in refs], [r[1:] for r in refs]),
            "modal": score([modal(o) for o in objects], refs),
            "random_train": score([rng.choice(train).answers[0] for _ in test], refs),
            "other_image": score([modal(o) for o in objects[1:] + objects[:1]], refs),
            "wrong_objects": score([modal(wrong(name, o, rng)) for o in objects], refs),
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
