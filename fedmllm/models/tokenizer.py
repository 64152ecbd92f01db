"""A word-level tokenizer trained offline for the embedded tiny models.

The tiny models speak the offline task suite's small vocabulary, so a word-level tokenizer (one id
per lower-cased word or punctuation mark) is enough and keeps sequences short. Decoding joins words
with single spaces, which the metrics' answer normalization (lower case, punctuation stripped)
turns back into the reference form.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK = "<pad>", "<unk>"
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, UNK, IMAGE_TOKEN, VIDEO_TOKEN, IM_START, IM_END)
# Words the chat template itself writes; always in the vocabulary whatever the corpus.
TEMPLATE_WORDS = ("system", "user", "assistant")

# Qwen2 / LLaVA-OneVision chat format (ChatML): one image placeholder, then the text, per user turn.
# The image placeholder is followed by a newline as in llava-hf's LLaVA-OneVision template.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(texts: list[str], kind: str = "word", vocab_size: int | None = None
                    ) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts`` (lower-cased, split on whitespace and punctuation).

    ``kind="word"``: word-level, one id per word (the small embedded bases). ``kind="wordpiece"``:
    WordPiece with ``vocab_size`` entries (specials and single characters included), so frequent
    words are one token and rarer ones ``##``-continued pieces (the large embedded base: a
    different vocabulary, so logit transfer between the two needs `fedmllm.collab.align`).

    Special tokens: ``<pad>`` (id 0), ``<unk>``, ``<image>``, ``<video>``, ``<|im_start|>`` and
    ``<|im_end|>`` (end of turn, used as EOS). The chat template is Qwen-style (see `CHAT_TEMPLATE`).
    Word-level ids are assigned by descending frequency, ties broken alphabetically, so the same
    corpus always gives the same vocabulary. WordPiece's trainer (the `tokenizers` Rust library) is
    *not* deterministic across processes (measured: three processes, three different 384-entry
    vocabularies from the same corpus), so a fresh large model's ids differ between processes; the
    shipped large base carries the tokenizer it was trained with (`tokenizer.json`).
    """
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    elif kind == "wordpiece":
        if not vocab_size:
            raise ValueError("a WordPiece tokenizer needs a vocab_size")
        tok = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##"))
        trainer = trainers.WordPieceTrainer(vocab_size=int(vocab_size), special_tokens=list(SPECIAL_TOKENS),
                                            min_frequency=1, continuing_subword_prefix="##")
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; valid: word, wordpiece")
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    # WordLevel has no decoder of its own; the WordPiece decoder joins tokens with spaces (and
    # ``##`` pieces to their word) and, with cleanup=False, leaves punctuation spacing alone
    # (metrics normalize it away).
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.train_from_iterator(list(texts) + [" ".join(TEMPLATE_WORDS)], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=IM_END,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN},
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
        model_max_length=1024,
    )
