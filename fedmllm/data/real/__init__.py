"""Loaders of the paper's twelve real datasets (Huang et al., arXiv 2503.04543).

Importing this package registers one `Task` per dataset (one module each). Every loader has the
signature ``loader(split, n=None, seed=0, source=None, hub_org=None, **options)`` and returns
`Sample` records with exactly one RGB image each:

- ``split``: ``"train"`` or ``"test"`` (the paper's split, mapped below);
- ``n``: a seeded random subset of ``n`` items (``None`` = all, in source order);
- ``source``: a hub id or a local folder. A local folder ``data/{split}-*.parquet`` (or any
  layout ``datasets.load_dataset(folder)`` reads, README configs included) is read exactly like
  the hub repo. ``None`` = the default hub id below;
- ``hub_org``: the org of the ``lmms-lab/*`` ids (else ``$FEDMLLM_HUB_ORG``, else ``lmms-lab``;
  lmms-eval moved its datasets to ``lmms-lab-encoder`` in 2026);
- options: ``cache_dir``, ``revision`` (passed to ``load_dataset``); ``carve=False`` for the
  carved datasets (test = the whole source split, no train); ``config=`` (GQA part);
  ``question=`` (CHD).

Train/test mapping. "carved" = the source has no train split, so its items are split by
``int(sha1(stable id)[:8], 16) % 100 < 80`` → train, else test (deterministic, disjoint).

============  ==========  ==========================  ===================  =====================
task          role        default source              paper train          paper test
============  ==========  ==========================  ===================  =====================
scienceqa     downstream  derek-thomas/ScienceQA      train                test
iconqa        downstream  lmms-lab/ICON-QA            val carved 80%       val carved 20%
                                                      (id: question_id)
rsvqa         downstream  local LR JSON release       LR_split_train       LR_split_test
pathvqa       downstream  flaviagiammarino/path-vqa   train                test
flickr30k     downstream  lmms-lab/flickr30k          test carved 80%      test carved 20%
                                                      (id: img_id)
chd           downstream  local folder (private)      train/ or data/train parquet; carved 80/20
                                                      by <diagnosis>/<file> without split folders
okvqa         upstream    lmms-lab/OK-VQA             val2014 carved 80%   val2014 carved 20%
                                                      (id: question_id)
gqa           upstream    lmms-lab/GQA                train_balanced       testdev_balanced
textvqa       upstream    lmms-lab/textvqa            train                validation
ocrvqa        upstream    howard-hou/OCR-VQA          train                test
coco-caption  upstream    lmms-lab/COCO-Caption       val carved 80%       val carved 20%
                                                      (id: question_id)
mme           upstream    lmms-lab/MME                test carved 80%      test carved 20%
                                                      (id: question_id = image pair key)
============  ==========  ==========================  ===================  =====================

Each module's docstring gives the source schema and its normalization.
"""

from fedmllm.data.real import (  # noqa: F401  (imported for their registrations)
    chd,
    coco_caption,
    flickr30k,
    gqa,
    iconqa,
    mme,
    ocrvqa,
    okvqa,
    pathvqa,
    rsvqa,
    scienceqa,
    textvqa,
)
