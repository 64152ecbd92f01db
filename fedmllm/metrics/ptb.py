"""Pure-Python reproduction of the caption tokenization of the official COCO caption evaluation.

pycocoevalcap's ``PTBTokenizer`` (and so lmms-eval's COCO / Flickr30k CIDEr) joins all captions
of one side (references, or candidates) with newlines, runs Stanford CoreNLP 3.4.1's
``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` on them (Java), splits the
output back into lines and drops the tokens listed in `PUNCTUATIONS`. This module reproduces
that without Java:

- `ptb_lex` gives the Java tool's standard output for a text (every line tokenized, tokens joined
  by single spaces, lowercased): a JFlex-style longest-match lexer whose rules follow the
  tokenizer's observable behaviour, checked against the Java tool on the committed fixtures
  (``tests/fixtures/ptb/``).
- `ptb_caption_strings` is pycocoevalcap's ``PTBTokenizer.tokenize`` on a list of captions (one
  side of one evaluation), and `ptb_tokenize` one caption alone.

Fine points kept on purpose, because the official numbers have them:

- Context crosses captions: an abbreviation such as "U.S." or "etc." at the end of a caption is
  followed by a newline and the next caption's first letter, and gets an extra "." token if that
  letter is uppercase (removed again as punctuation); "No." stays "no." only before a digit, also
  the next caption's; and the last caption of a side meets the end of the input, not a newline.
- Brackets become ``-lrb-``, ``-rrb-``, ``-lsb-``, ``-rsb-``, ``-lcb-``, ``-rcb-`` *after*
  lowercasing, so they are not in the (uppercase) punctuation list and stay as tokens.
- Quotes become LaTeX style (`` `` `` and ``''``) and are dropped; "woman's" is "woman 's", "don't"
  is "do n't", "cannot" is "can not", "gonna" is "gon na"; hyphenated words stay whole.
- Characters outside the Basic Multilingual Plane (emoji) are deleted; "1 1/2" is one token with
  a no-break space, which CIDEr's whitespace split separates again.
- A caption containing another line break than "\\n" (``\\r``, U+2028, U+0085 is an ellipsis) adds
  a line to the tool's output, shifting every later caption of that side onto its neighbour's line,
  exactly as in pycocoevalcap.

Evidence and scope: the output equals the Java tool's on every committed fixture (realistic and
tricky captions, alone and as one stream) and, during development, on about 600,000 generated lines
(caption fragments, every abbreviation of the tool in several cases, punctuation soups, all BMP
characters). Letter, digit and uppercase classes are Python's Unicode database corrected by
tables measured on the jar (whose Unicode is older). It is a reimplementation from observed
behaviour, not a translation of the tool, so inputs far from captions (markup, entities, exotic
scripts) are the likeliest to still differ.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable, Iterable, Optional

# pycocoevalcap/tokenizer/ptbtokenizer.py, verbatim (note: uppercase -LRB- etc. never match the
# lowercased output).
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])


# ----------------------------------------------------------------------------- character classes
def _class_body(cps: list[int]) -> str:
    """A regex character-class body matching exactly the (sorted) code points ``cps``."""
    parts: list[tuple[int, int]] = []
    for cp in cps:
        if parts and parts[-1][1] == cp - 1:
            parts[-1] = (parts[-1][0], cp)
        else:
            parts.append((cp, cp))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in parts)


def _ranges(spec: str) -> frozenset[int]:
    out: set[int] = set()
    for part in spec.split():
        a, _, b = part.partition("-")
        out.update(range(int(a, 16), int(b or a, 16) + 1))
    return frozenset(out)


# The jar's character tables are older than Python's Unicode database. Measured with the jar
# (every BMP character alone, between letters, before ".5" and after "etc. "): letters and digits
# assigned or re-categorized since are untokenizable there (deleted), two Mongolian letters since
# turned into marks are still letters, and [:uppercase:] is Java's isUpperCase of its time.
_JAVA_UNKNOWN = _ranges(
    "037F 0528-052F 0560 0588 05EF 0860-086A 0870-0887 0889-088E 08A1 08AD-08C9 0978 0980 09FC "
    "0AF9 0C34 0C5A 0C5D 0C80 0CDD 0D04 0D54-0D56 0D5F 0DE6-0DEF 0E86 0E89 0E8C 0E8E-0E93 0E98 "
    "0EA0 0EA8-0EA9 0EAC 13F5 13F8-13FD 16F1-16F8 170D 171F 1878 191D-191E 19B0-19C0 19C8-19C9 "
    "1B4C 1C80-1C88 1C90-1CBA 1CBD-1CBF 1CF2-1CF3 1CFA 2C2F 2C5F 312E-312F 31BB-31BF 4DB6-4DBF "
    "9FCD-9FFF A698-A69D A78F A794-A79F A7AB-A7CA A7D0-A7D1 A7D3 A7D5-A7D9 A7F2-A7F7 A8FD-A8FE "
    "A9E0-A9E4 A9E6-A9FE AA7E-AA7F AB30-AB5A AB5C-AB69 AB70-ABBF")
_JAVA_LETTER = _ranges("1885-1886")
_JAVA_NOT_UPPER = _ranges("13A0-13F4")
_JAVA_UPPER = _ranges("2160-216F 24B6-24CF")


def _java_classes() -> tuple[str, str, str]:
    """JFlex [:letter:] (Character.isLetter), [:digit:] (Character.isDigit) and [:uppercase:] of
    the jar, as regex class bodies over the BMP."""
    letters, digits, upper = [], [], []
    for cp in range(0x10000):
        cat = unicodedata.category(chr(cp))
        known = cp not in _JAVA_UNKNOWN
        if (cat[0] == "L" and known) or cp in _JAVA_LETTER:
            letters.append(cp)
        if cat == "Nd" and known:
            digits.append(cp)
        if (cat == "Lu" and known and cp not in _JAVA_NOT_UPPER) or cp in _JAVA_UPPER:
            upper.append(cp)
    return _class_body(letters), _class_body(digits), _class_body(upper)


_L, _D, _UP = _java_classes()
# Extra "letters" of the tokenizer's WORD (combining marks and a few letter-like ranges).
_EXTRA = ("\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D"
          "\u0384\u0385\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525"
          "\u055A-\u055F\u0591-\u05BD\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A"
          "\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F"
          "\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E"
          "\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7"
          "\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82"
          "\u0BBE-\u0BC2\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44"
          "\u0D46-\u0D48\u0E30-\u0E3A\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD")


def ci(text: str) -> str:
    """``text`` as a case-insensitive literal (the scanner is caseless outside char classes)."""
    out = []
    for ch in text:
        if "a" <= ch.lower() <= "z" and ch.isascii():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def alt(*words: str) -> str:
    """Case-insensitive alternation of literal words, longest first."""
    return "(?:" + "|".join(ci(w) for w in sorted(words, key=len, reverse=True)) + ")"


# ----------------------------------------------------------------------------- macros
LETTER = f"(?:[{_L}{_EXTRA}]|&[aeiouAEIOU](?:{ci('acute')}|{ci('grave')}|{ci('uml')});)"
LD = f"[{_L}{_D}]"
DIGIT = f"[{_D}\u07C0-\u07C9]"
UPPER = f"[{_UP}]"
SPACE = "[ \t\u00A0\u2000-\u200A\u3000]"
NEWLINE = "(?:\r\n|[\r\n\u2028\u2029\u000B\u000C\u0085])"
SPACENL = f"(?:{SPACE}|{NEWLINE})"
_SGML_NAME = "[A-Za-z][A-Za-z0-9_:.\\-]*"
SGML = (f"<(?:[!?][A-Za-z\\-][^>\r\n]*|{_SGML_NAME}(?:[ ]+{_SGML_NAME}"
        f"(?:[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\"))?)*[ ]*\\/?|\\/{_SGML_NAME})[ ]*>")
SENTEND = f"{SPACENL}(?:{SPACENL}|{UPPER}|{SGML})"
APOS = f"(?:['\u0092\u2019]|{ci('&apos;')})"
APOSETC = f"(?:{APOS}|[`\u0091\u2018\u201B])"
HYPHEN = "[-_\u058A\u2010\u2011]"
SPAMP = ci("&amp;")
WORD = f"{LETTER}(?:{LETTER}|{DIGIT})*(?:[.!?]{LETTER}(?:{LETTER}|{DIGIT})*)*"
NUM = f"(?:{DIGIT}*(?:[.:,\u00AD\u066B\u066C]{DIGIT}+)+|{DIGIT}+)"
NUMBER = f"[-+]?{NUM}"
ACRO = (f"(?:{alt('Canada', 'Sino', 'Korean', 'EU', 'Japan', 'non')}-{ci('U.S')}"
        f"|{ci('U.S.-')}(?:{ci('U.S.S.R')}|{ci('U.K')})|[A-Za-z](?:\\.[A-Za-z])*)")
ACRO_DOTTED = (f"(?:{alt('Canada', 'Sino', 'Korean', 'EU', 'Japan', 'non')}-{ci('U.S')}"
               f"|{ci('U.S.-')}(?:{ci('U.S.S.R')}|{ci('U.K')})|[A-Za-z](?:\\.[A-Za-z])+)")
REDAUX = f"{APOS}(?:[msdMSD]|{ci('re')}|{ci('ve')}|{ci('ll')})"
SREDAUX = f"{ci('n')}{APOSETC}{ci('t')}"
SWORD = "[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*"
THING_PART = f"(?:[dDoOlL]{APOSETC}{LD})?{LD}+"
THING = f"{THING_PART}(?:{HYPHEN}{THING_PART})*"
THINGA = f"[A-Z]+(?:(?:[+&]|{SPAMP})[A-Z]+)+"
THING3 = "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?\\/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
HTHING = (f"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*"
          f"(?:-(?:{ACRO_DOTTED}\\.|[A-Za-z0-9\u00AD]+))+")
_VOWEL_APO = f"[{_L}]+[aeiouyAEIOUY]{APOSETC}[aeiouA-Z][{_L}]*"
APOWORD = ("(?:" + "|".join([
    _VOWEL_APO,
    f"[A-HJ-XZn]{APOSETC}[{_L}]{{2}}[{_L}]*",
    f"{APOS}{ci('n')}{APOS}?", f"[lLdDjJ]{APOS}", f"{ci('Dunkin')}{APOS}",
    f"{ci('somethin')}{APOS}", f"{ci('ol')}{APOS}", f"{APOS}{ci('em')}",
    f"{APOS}[2-9]0{ci('s')}", f"{APOS}{ci('til')}{ci('l')}?", f"{APOS}{ci('cause')}",
    f"{ci('cont')}'{ci('d')}\\.?", ci("'twas"), ci("nor'easter"), ci("c'mon"), ci("e'er"),
    ci("s'mores"), ci("ev'ry"), ci("li'l"), ci("nat'l"), f"{ci('O')}{APOSETC}{ci('o')}",
]) + ")")
FULLURL = f"{ci('http')}{ci('s')}?:\\/\\/[^ \t\n\f\r\"<>|(){{}}]+[^ \t\n\f\r\"<>|.!?(){{}},-]"
LIKELYURL = (f"(?:(?:{ci('www.')}(?:[^ \t\n\f\r\"<>|.!?(){{}},]+\\.)+[a-zA-Z]{{2,4}})"
             f"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){{}},-_$]+\\.)+{alt('com', 'net', 'org', 'edu')}))"
             f"(?:\\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){{}},-])?")
EMAIL = (f"(?:{ci('&lt;')}|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{{}}]*@"
         f"(?:[^ \t\n\f\r\"<>|(){{}}.\u00A0]+\\.)*[^ \t\n\f\r\"<>|(){{}}.\u00A0]+"
         f"(?:{ci('&gt;')}|>)?")
TWITTER = f"(?:@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+)"
DATE = f"{DIGIT}{{1,2}}[\\-\\/]{DIGIT}{{1,2}}[\\-\\/]{DIGIT}{{2,4}}"
SUBSUPNUM = ("[\u207A\u207B\u208A\u208B]?"
             "(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)")
FRAC = f"(?:{DIGIT}{{1,4}}[- \u00A0])?{DIGIT}{{1,4}}(?:\\\\?\\/|\u2044){DIGIT}{{1,4}}"
FRAC2 = "[\u00BC\u00BD\u00BE\u2153-\u215E]"
DOLSIGN = "(?:[A-Z]*\\$|#)"
DOLSIGN2 = ("[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1"
            "\uFFE5\uFFE6]")
TBSPEC = ("(?:-(?:" + "|".join(ci(w) for w in ("RRB", "LRB", "RCB", "LCB", "RSB", "LSB")) + ")-"
          f"|{ci('C.D.s')}|{ci('pro-')}|{ci('anti-')}|{ci('S')}(?:{SPAMP}|&){ci('P-500')}"
          f"|{ci('S')}(?:{SPAMP}|&){ci('Ls')}|{ci('Cap')}{APOS}{ci('n')}"
          f"|{ci('c')}{APOS}{ci('est')})")
TBSPEC2 = f"{APOS}[0-9][0-9]"
# Abbreviations (the scanner is caseless except inside brackets: "[I]ll" needs a capital I).
ABMONTH = alt("Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec")
ABDAYS = alt("Mon", "Tue", "Tues", "Wed", "Thu", "Thurs", "Fri")
ABSTATE = ("(?:" + "|".join(
    [ci(w) for w in ("Ala", "Ariz", "Calif", "Colo", "Conn", "Ct", "Dak", "Fla", "Ga", "Ind",
                     "Kans", "Kan", "Ky", "Md", "Mich", "Minn", "Mo", "Mont", "Neb", "Nev", "Okla",
                     "Penn", "Tenn", "Va", "Vt", "Wisc", "Wis", "Wyo")]
    + [w[0] + ci(w[1:]) for w in ("Az", "Ark", "Del", "Ill", "La", "Mass", "Miss", "Ore", "Pa",
                                  "Tex", "Wash")]) + ")")
_ABCOMP_WORDS = alt("Inc", "Co", "Cos", "Corp", "Ltd", "Plc", "Rt", "Bancorp", "Bhd", "Assn",
                    "Univ", "Intl", "Sys")
ABCOMP = f"(?:{_ABCOMP_WORDS}|{ci('P')}{ci('p')}?{ci('t')}[ye]{ci('s')}?)"
ABNUM = alt("tel", "est", "ext", "sq")
ABPTIT = f"(?:{alt('Jr', 'Sr', 'Bros', 'Blvd', 'Rd', 'Esq')}|{alt('Ed', 'Ph')}\\.{ci('D')})"
ABBREV1 = (f"(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}"
           f"|{alt('etc', 'al', 'seq', 'Bldg')})\\.")
ABTITLE = ("(?:" + "|".join(
    [ci(w) for w in sorted(
        ("Mr", "Mrs", "Ms", "Dr", "Drs", "Prof", "Profs", "Sen", "Sens", "Rep", "Reps", "Atty",
         "Attys", "Lt", "Col", "Gen", "Messrs", "Gov", "Govs", "Adm", "Rev", "Maj", "Sgt", "Cpl",
         "Pvt", "Mt", "Capt", "St", "Ste", "Ave", "Pres", "Lieut", "Hon", "Brig", "Cmdr", "Comdr",
         "Pfc", "Spc", "Supt", "Supts", "Det", "Ft", "Adj", "Adv", "Asst", "Assoc", "Ens", "Insp",
         "Mlle", "Mme", "Msgr", "Sfc"), key=len, reverse=True)]
    + ["M" + ci("iss")]) + ")")
ABCOMP2 = f"(?:{alt('Invt', 'Elec', 'Natl', 'Dept')}|{ci('M')}[ft]{ci('g')})"
ABBREV4 = (f"(?:{ABTITLE}|{alt('vs', 'Alex', 'Wm', 'Jos', 'Cie', 'cf', 'TREAS', 'Ph')}"
           f"|{ci('a.k.a')}|{ABCOMP2}|{ACRO})")
ABBREV2 = f"{ABBREV4}\\."
ACRONYM = f"{ACRO}\\."
ABBREV3 = f"{alt('ca', 'figs', 'fig', 'prop', 'nos', 'no', 'art', 'bldg', 'pp', 'op')}\\."
ACRO_NEXT = ("(?:" + "|".join(
    [w[0] + ci(w[1:]) for w in sorted(
        ("About", "According", "Additionally", "After", "An", "A", "As", "At", "But", "Earlier",
         "He", "Her", "Here", "However", "If", "In", "It", "Last", "Many", "More", "Now", "Once",
         "One", "Other", "Our", "She", "Since", "So", "Some", "Such", "That", "The", "Their",
         "Then", "There", "These", "They", "This", "We", "When", "While", "What", "Yet", "You"),
        key=len, reverse=True)]
    + ["M" + ci("r."), "M" + ci("s."), SGML]) + ")")
_FILE_EXT = alt("bat", "bmp", "c", "class", "cgi", "cpp", "dll", "doc", "docx", "exe", "gif",
                "gz", "h", "htm", "html", "jar", "java", "jpeg", "jpg", "mov", "mp3", "pdf", "php",
                "pl", "png", "ppt", "ps", "py", "sql", "tar", "txt", "wav", "x", "xml", "zip")
FILENAME = f"[{_L}{_D}]+(?:\\.[{_L}{_D}]+)*\\.{_FILE_EXT}"
PHONE = ("(?:(?:\\([0-9]{2,3}\\)[ \u00A0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[\\- \u00A0])?"
         "[0-9]{2,4}[\\- \u00A0])[0-9]{3,4}[\\- \u00A0]?[0-9]{3,5}"
         "|(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5})")
LDOTS = "(?:\\.{3,5}|(?:\\.[ \u00A0]){2,4}\\.|[\u0085\u2026])"
INSENTP = "[,;:\u3001]"
QUOTES = (f"(?:''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094"
          f"\u201E\u201F\u2039\u203A\u00AB\u00BB]{{1,2}}|{APOS})")
DBLQUOT = f"(?:\"|{ci('&quot;')})"
SMILEY = "[<>]?[:;=][\\-o\\*']?[\\(\\)DPdpO\\\\{@\\|\\[\\]]"
_AS = "[\\^x=~<>]"
_AS2 = "[\\-\\^x=~<>']"
ASIANSMILEY = (f"(?:{_AS}\\.\\[\\^{ci('x')}=~<>\\]|{_AS2}_{_AS2}|\\({_AS2}[_.]?{_AS2}\\)"
               f"|\\([\\^x=~<>']-[\\^x=~<>'`]\\))")
MISCSYMBOL = ("[+%&~\\^|\\\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA"
              "\u00D7\u00F7\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A"
              "\u060C\u0614\u061B\u061E\u066A\u066D\u0703-\u070D\u07F6\u07F7\u07F8\u0964\u0965"
              "\u0E4F\u1FBD\u2016\u2017\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044"
              "\u207A-\u207F\u208A-\u208E\u2100-\u214F\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB"
              "\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]")
SKIP = f"(?:\\x00|{SPACE}+|[\u200B\u200E\u200F\uFEFF]|{ci('&nbsp;')})"


# ----------------------------------------------------------------------------- token actions
def _soft(tok: str) -> str:
    """Soft hyphens (U+00AD) removed; a token of only soft hyphens becomes "-"."""
    out = tok.replace("\u00AD", "")
    return out or "-"


_LEFT_SINGLE = re.compile("[\u0091\u2018\u201B\u2039]")
_RIGHT_SINGLE = re.compile("[\u0092\u2019\u203A]")
_LEFT_DOUBLE = re.compile("[\u0093\u201C\u00AB]")
_RIGHT_DOUBLE = re.compile("[\u0094\u201D\u00BB]")
_APOS_ENTITY = re.compile("&apos;|'")
_QUOT_ENTITY = re.compile("\"|&quot;")


def _quotes(tok: str, left: bool) -> str:
    """LaTeX-style quotes: ` `` for opening, ' '' for closing."""
    tok = _APOS_ENTITY.sub("`" if left else "'", tok)
    tok = _QUOT_ENTITY.sub("``" if left else "''", tok)
    tok = _LEFT_SINGLE.sub("`", tok)
    tok = _RIGHT_SINGLE.sub("'", tok)
    tok = _LEFT_DOUBLE.sub("``", tok)
    return _RIGHT_DOUBLE.sub("''", tok)


def _amp(tok: str) -> str:
    return re.sub("(?i:&amp;)", "&", tok)


def _parens(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


def _currency(tok: str) -> str:
    tok = tok.replace("\u00A2", "cents").replace("\u00A3", "#")
    return re.sub("[\u0080\u00A4\u20A0\u20AC]", "$", tok)


def _fraction(tok: str) -> str:
    return (tok.replace("\u00BC", "1/4").replace("\u00BD", "1/2").replace("\u00BE", "3/4")
            .replace("\u2153", "1/3").replace("\u2154", "2/3"))


def _nbsp(tok: str) -> str:
    return tok.replace(" ", "\u00A0")


def _strip_space_end(tok: str) -> str:
    return tok.rstrip(" \t\n\x0b\x0c\r\x85")


# An action maps the matched text to (output token or None, number of characters consumed).
Action = Callable[[str], tuple[Optional[str], int]]


def _keep(fn: Callable[[str], str] = lambda t: t) -> Action:
    return lambda t: (fn(t), len(t))


def _pushback(k: int) -> Action:
    return lambda t: (t[:-k], len(t) - k)


def _dup_period(t: str) -> tuple[str, int]:
    """The abbreviation with its period, and the period again as the next token."""
    return t, len(t) - 1


def _acronym(t: str) -> tuple[str, int]:
    t = _strip_space_end(t)
    if len(t) == 2:  # "I." etc.: the letter, then the period
        return t[:1], 1
    return t, len(t) - 1


def _abbrev3(t: str) -> tuple[str, int]:
    t = _strip_space_end(t)
    return t, len(t)


def _skip(t: str) -> tuple[None, int]:
    return None, len(t)


NL = "\n"


def _newline(t: str) -> tuple[str, int]:
    return NL, len(t)


# (main pattern, trailing context or None, action), in the scanner's rule order: the longest
# match (trailing context included) wins, ties go to the earlier rule.
_RULE_SPECS: list[tuple[str, Optional[str], Action]] = [
    (f"{ci('c++')}|[cCfF]#", None, _keep()),
    (f"{ci('cannot')}|{ci(chr(39) + 'twas')}", None, _pushback(3)),
    (alt("'tis", "gonna", "gotta", "lemme", "gimme", "wanna"), None, _pushback(2)),
    (SGML, None, _keep(_nbsp)),
    (f"{ci('&')}(?:{ci('MD')}|{ci('mdash')}|{ci('ndash')});|[\u0096\u0097\u2013\u2014\u2015]",
     None, _keep(lambda t: "--")),
    (SPAMP, None, _keep(_amp)),
    (f"&(?:{alt('HT', 'TL', 'UR', 'LR', 'QC', 'QL', 'QR', 'odq', 'cdq')}|#[0-9]+);", None,
     _keep()),
    (WORD, REDAUX, _keep(_soft)),
    (SWORD, SREDAUX, _keep(_soft)),
    (WORD, None, _keep(_soft)),
    (APOWORD, None, _keep()),
    (f"{ci('y')}{APOS}", f"[{_L}]", _keep()),
    (FULLURL, None, _keep()),
    (LIKELYURL, None, _keep()),
    (EMAIL, None, _keep()),
    (TWITTER, None, _keep()),
    (REDAUX, "[^A-Za-z]", _keep(lambda t: _quotes(t, False))),
    (SREDAUX, None, _keep(lambda t: _quotes(t, False))),
    (DATE, None, _keep()),
    (NUMBER, None, _keep(_soft)),
    (SUBSUPNUM, None, _keep()),
    (FRAC, None, _keep(_nbsp)),
    (FRAC2, None, _keep(_fraction)),
    (TBSPEC, None, _keep(_amp)),
    (THING3, None, _keep()),
    (DOLSIGN, None, _keep()),
    (DOLSIGN2, None, _keep(_currency)),
    (ACRONYM, f"{SPACENL}+{ACRO_NEXT}{SPACENL}", _acronym),
    (ABBREV3, f"{SPACENL}?{DIGIT}", _abbrev3),
    (f"(?:{ci('pt')}[eyEY]|{ci('co')})\\.", f"{SPACE}(?:{ci('ltd')}|{ci('lim')})", _keep()),
    (ABBREV1, SENTEND, _dup_period),
    (ABBREV1, "[\\s\\S][\\s\\S]", _keep()),
    (ABBREV1, None, _dup_period),
    (ABBREV2, None, _keep()),
    (ABBREV4, SPACE, _keep()),
    (ACRO, SPACENL, _keep()),
    (TBSPEC2, SPACENL, _keep()),
    (FILENAME, f"(?:{SPACENL}|[.?!,])", _keep()),
    (f"{WORD}\\.", INSENTP, _keep(_soft)),
    (PHONE, None, _keep(lambda t: _parens(_nbsp(t)))),
    (DBLQUOT, "[A-Za-z0-9$]", _keep(lambda t: _quotes(t, True))),
    (DBLQUOT, None, _keep(lambda t: _quotes(t, False))),
    ("\x7f", None, _skip),
    (f"<|{ci('&lt;')}", None, _keep(lambda t: "<")),
    (f">|{ci('&gt;')}", None, _keep(lambda t: ">")),
    (SMILEY, "[^A-Za-z0-9]", _keep(_parens)),
    (ASIANSMILEY, None, _keep(_parens)),
    ("\\{", None, _keep(lambda t: "-LCB-")),
    ("\\}", None, _keep(lambda t: "-RCB-")),
    ("\\[", None, _keep(lambda t: "-LSB-")),
    ("\\]", None, _keep(lambda t: "-RSB-")),
    ("\\(", None, _keep(lambda t: "-LRB-")),
    ("\\)", None, _keep(lambda t: "-RRB-")),
    ("-+", None, _keep(lambda t: "--" if 3 <= len(t) <= 4 else t)),
    (LDOTS, None, _keep(lambda t: "...")),
    ("@+|#+|_+", None, _keep()),
    ("\\*+|(?:\\\\\\*){1,3}", None, _keep()),
    (INSENTP, None, _keep()),
    ("[?!]+", None, _keep()),
    ("[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None, _keep()),
    ("=", None, _keep()),
    ("\\/", None, _keep()),
    (f"{HTHING}\\.", INSENTP, _keep(_soft)),
    (HTHING, None, _keep(_soft)),
    (f"{THING}\\.", INSENTP, _keep()),
    (THING, None, _keep()),
    (f"{THINGA}\\.", INSENTP, _keep(_amp)),
    (THINGA, None, _keep(_amp)),
    ("'", "[A-Za-z][^ \t\n\r\u00A0]", _keep(lambda t: _quotes(t, True))),
    (REDAUX, None, _keep(lambda t: _quotes(t, False))),
    (QUOTES, None, _keep(lambda t: _quotes(t, False))),
    ("<<|>>", None, _keep()),
    (MISCSYMBOL, None, _keep()),
    (SKIP, None, _skip),
    (NEWLINE, None, _newline),
]


def _compile(main: str, trail: Optional[str]) -> re.Pattern:
    if trail is None:
        return re.compile(f"(?:{main})")
    return re.compile(f"(?:{main})(?=(?P<t>{trail}))")




@lru_cache(maxsize=1)
def _rules() -> list[tuple[re.Pattern, bool, Action]]:
    """The compiled rules (compiled on first use: importing the metrics stays fast)."""
    return [(_compile(m, t), t is not None, act) for m, t, act in _RULE_SPECS]


# Fast path: a plain ASCII word followed by a space, a line break or the end. Every rule that could
# match there gives the same token (or is one of the few split words below).
_PLAIN = re.compile("[A-Za-z]+(?=[ \n]|$)")
_SPLIT_WORDS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
_SPACES = re.compile(f"[ \t]{SPACE}*")  # at a space or tab only the space run can match


def _to_utf16_units(text: str) -> str:
    """Astral characters as two surrogate code units, as Java sees them (one JFlex char each)."""
    if all(ord(ch) < 0x10000 for ch in text):
        return text
    out = []
    for ch in text:
        cp = ord(ch)
        if cp < 0x10000:
            out.append(ch)
        else:
            cp -= 0x10000
            out.append(chr(0xD800 + (cp >> 10)))
            out.append(chr(0xDC00 + (cp & 0x3FF)))
    return "".join(out)


def _from_utf16_units(text: str) -> str:
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def lex(text: str) -> list[str]:
    """The tokens of ``text`` before lowercasing, with ``"\\n"`` for every line break."""
    units = _to_utf16_units(text)
    astral, text = units is not text, units
    rules = _rules()
    tokens: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _SPACES.match(text, pos)
        if m:
            pos = m.end()
            continue
        m = _PLAIN.match(text, pos)
        if m and m.group().lower() not in _SPLIT_WORDS:
            tokens.append(m.group())
            pos = m.end()
            continue
        best_len, best = -1, None
        for rx, has_trail, act in rules:
            m = rx.match(text, pos)
            if m is None:
                continue
            total = m.end() - pos + (len(m.group("t")) if has_trail else 0)
            if total > best_len:
                best_len, best = total, (m.group(), act)
        if best is None or best_len <= 0:  # untokenizable: deleted (the tool warns once)
            pos += 1
            continue
        tok, used = best[1](best[0])
        if tok:
            tokens.append(tok)
        pos += max(used, 1)
    if astral:  # surrogate pairs kept inside a token (a URL, say) become characters again
        tokens = [_from_utf16_units(t) for t in tokens]
    return tokens


def _cased(ch: str) -> bool:
    """Unicode "Cased": lowercase, uppercase (Other_Lowercase/Other_Uppercase included) or
    titlecase."""
    return ch.islower() or ch.isupper() or ch.istitle()


_MID_WORD = frozenset("_-\u00ad\u2027\"'.\u2010\u2011\u2012\u2013\u2014\u2015")


def _word_char(tok: str, j: int) -> bool:
    """Whether ``tok[j]`` continues a word for Java's word BreakIterator (letters, digits and
    marks, and underscores, dashes, quotes or periods between two letters)."""
    ch = tok[j]
    if ch.isalnum() or unicodedata.category(ch) == "Mn":
        return True
    return (ch in _MID_WORD and 0 < j < len(tok) - 1 and tok[j - 1].isalpha()
            and tok[j + 1].isalpha())


def _lower(tok: str) -> str:
    """Java's ``String.toLowerCase``: as Python's, except for the final-sigma rule, which Java
    decides within the word around the sigma (``"ΑΣ-Α"`` is one word there)."""
    if "\u03a3" not in tok:
        return tok.lower()
    out = []
    for i, ch in enumerate(tok):
        if ch != "\u03a3":
            out.append(ch.lower())
            continue
        j, preceded = i - 1, False
        while j >= 0 and _word_char(tok, j):
            if _cased(tok[j]):
                preceded = True
                break
            j -= 1
        followed, j = False, i + 1
        while j < len(tok) and _word_char(tok, j):
            if _cased(tok[j]):
                followed = True
                break
            j += 1
        out.append("\u03c2" if preceded and not followed else "\u03c3")
    return "".join(out)


def ptb_lex(text: str) -> str:
    """Standard output of ``PTBTokenizer -preserveLines -lowerCase`` (CoreNLP 3.4.1) on ``text``:
    tokens lowercased and joined by single spaces, one output line per input line."""
    out: list[str] = []
    line_start = True
    for tok in lex(text):
        if tok == NL:
            out.append(NL)
            line_start = True
            continue
        if not line_start:
            out.append(" ")
        out.append(_lower(tok))
        line_start = False
    return "".join(out)


def ptb_caption_strings(captions: Iterable[str]) -> list[str]:
    """pycocoevalcap ``PTBTokenizer.tokenize`` on one side's captions, in order: each caption's
    tokens, punctuation dropped, joined by spaces (CIDEr then splits on whitespace).

    Like the original, captions are joined with newlines (inner ``"\\n"`` replaced by spaces), so
    a caption's tokens can depend on the next caption's first character, and output lines are
    matched to captions in order (a caption with another line break shifts the rest).
    """
    captions = [str(c).replace("\n", " ") for c in captions]
    if not captions:
        return []
    lines = ptb_lex("\n".join(captions)).split("\n")
    out = []
    for _, line in zip(captions, lines):
        out.append(" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS))
    return out


@lru_cache(maxsize=65536)
def _tokenize_one(caption: str) -> tuple[str, ...]:
    return tuple(ptb_caption_strings([caption])[0].split())


def ptb_tokenize(caption: str) -> list[str]:
    """The CIDEr tokens of one caption tokenized alone (no neighbouring caption): PTB tokens,
    lowercased, punctuation dropped, split on whitespace."""
    return list(_tokenize_one(str(caption)))
