"""Answer normalization shared by every metric.

`normalize_answer` is a port of the official VQA evaluation normalizer (Antol et al. 2015,
``vqaEval.py`` of github.com/GT-Vision-Lab/VQA: newlines and tabs to spaces, strip,
``processPunctuation`` then ``processDigitArticle``). It maps number words to digits (``"two"`` ->
``"2"``), so ``"2" == "two"`` after normalization, drops the articles a/an/the and restores
contraction apostrophes. The default ``style="vqa"`` is that official normalizer.

lmms-eval's VQA-accuracy tasks (OK-VQA, TextVQA, VQAv2) use ``EvalAIAnswerProcessor``
(lmms_eval/tasks/_task_utils/vqa_eval_metric.py, from MMF), which is *not* the same: before the two
official steps it lowercases, deletes every ``","`` and ``"?"`` and splits off ``"'s"``. So, with
``style="lmms-eval"`` (which reproduces it exactly) compared with the official normalizer:

- ``"man's"`` -> ``"man 's"`` and ``"it's"`` -> ``"it 's"`` (official: ``"man's"``, ``"it's"``);
- a comma or question mark inside a word disappears instead of becoming a space:
  ``"red,blue"`` -> ``"redblue"``, ``"what?no"`` -> ``"whatno"`` (official: ``"red blue"``,
  ``"what no"``);
- as no comma survives, a digit-comma-digit number no longer makes every other mark vanish:
  ``"1,000-yard"`` -> ``"1000 yard"`` (official: ``"1000yard"``).

Everything else (marks kept, number words, articles, contractions, the period rule) is identical.
Both also keep a quirk of their common source: the period-stripping regex is applied with
``re.UNICODE`` passed as its ``count``, so at most 32 periods are removed.

`tokenize_caption` is the simple caption tokenizer (lowercase, apostrophes dropped, other
punctuation stripped, whitespace split), kept as CIDEr-D's ``tokenizer="simple"``; CIDEr-D uses
the official PTB tokenization (`fedmllm.metrics.ptb`) by default.
"""

from __future__ import annotations

import re
import string

# Official VQA contraction table, verbatim (keys with capitals never match after lowercasing,
# exactly as in the official script; kept so scores agree with published numbers).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The official list: note that it keeps ' . : and a few symbols (% $ # & * ~ ^ |).
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
          "@", "`", ",", "?", "!"]
# Official regexes. "(?!<=\d)" is a typo for a lookbehind in the original and is always true:
# the effect is "a period not followed by a digit" (so "3.5" keeps its period, "yes." loses it).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    """Official ``processPunctuation``: delete a mark next to a space (or anywhere if the text has
    a digit-comma-digit number such as "1,000"); otherwise replace it by a space. Then remove
    periods not followed by a digit (at most 32: the original passes ``re.UNICODE`` as count)."""
    out = text
    has_number_comma = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or has_number_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def _process_digit_article(text: str) -> str:
    """Official ``processDigitArticle``: lowercase, number words -> digits, drop articles, then
    restore apostrophes of contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


STYLES = ("vqa", "lmms-eval")


def _lmms_eval_prepass(text: str) -> str:
    """``EvalAIAnswerProcessor.word_tokenize``: lowercase, delete "," and "?", split off "'s"."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def normalize_answer(s: str, style: str = "vqa") -> str:
    """Normalize a short answer the way the official VQA evaluation does (``style="vqa"``), or
    exactly as lmms-eval's ``EvalAIAnswerProcessor`` does (``style="lmms-eval"``; see the module
    docstring for the three differences).

    Lowercases, strips punctuation, maps number words to digits (``"Two."`` -> ``"2"``), drops
    the articles a/an/the, restores contraction apostrophes (``"dont"`` -> ``"don't"``) and
    collapses whitespace. Used (official style) by exact match, VQA accuracy, option letters and
    MME.
    """
    text = str(s)
    if style == "lmms-eval":
        text = _lmms_eval_prepass(text)
    elif style != "vqa":
        raise ValueError(f"normalize_answer: unknown style {style!r}; valid: {', '.join(STYLES)}")
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


_CAPTION_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")


def tokenize_caption(s: str) -> list[str]:
    """Simple caption tokens (CIDEr-D's ``tokenizer="simple"``, not the official tokenization):
    lowercase, apostrophes dropped ("man's" -> "mans"), every other punctuation mark replaced by
    a space, then whitespace split."""
    text = str(s).lower().replace("'", "")
    return _CAPTION_PUNCT.sub(" ", text).split()


def check_aligned(predictions: list[str], samples: list, metric: str) -> None:
    """Raise ``ValueError`` unless predictions and samples are non-empty and of equal length."""
    if len(predictions) != len(samples):
        raise ValueError(
            f"metric {metric!r}: {len(predictions)} predictions for {len(samples)} samples"
        )
    if not samples:
        raise ValueError(f"metric {metric!r}: nothing to score (0 samples)")
