"""Untrusted text in the judge prompt: the eval input, the reference and the answer.

Each field is put between its own tags, derived from a hash of the field's text, so the text cannot contain
its own closing tag (that would be a SHA-256 fixed point), yet stable across runs, so cache keys are too.
Before that, the text is made inert for a judge that reads it loosely:
- Unicode NFKC first: full-width and compatibility look-alikes (`＜/answer＞`, `SCORE：5`) become the ASCII
  they imitate, so the escaping below sees them. A judge that normalises its input would otherwise read a
  tag or a verdict line our ASCII-only escaping let through.
- invisible format characters (zero-width space/joiner, bidi controls) are dropped and every line break
  (\\r, U+2028, ...) becomes \\n: `SC\\u200bORE:` or a verdict after U+2028 cannot hide from the defanging.
- `&`, `<`, `>` are escaped: no tag can be opened or closed from the text.
- `SCORE:` look-alikes (any case, any spacing) become `score -`: a judge quoting the text back after its
  verdict cannot produce a verdict line from it (the stage reads only the LAST `SCORE:` line).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

FIELDS = ("input", "reference", "answer")
_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_VERDICT_LIKE = re.compile(r"(?i)s\s*c\s*o\s*r\s*e\s*:")


def normalise(text: str) -> str:
    """NFKC, no invisible format characters (Unicode category Cf), one kind of line break."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return _LINE_BREAKS.sub("\n", text)


def neutralise(text: str) -> str:
    """Inert text for the inside of a tag block (see the module docstring)."""
    text = normalise(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _VERDICT_LIKE.sub("score -", text)


def tag(field: str, text: str) -> str:
    """Per-field, per-text delimiter, e.g. `answer-1f2e3d4c`."""
    return f"{field}-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def delimit(field: str, text: str) -> dict[str, str]:
    """What the template needs for one untrusted field: its tag and its neutralised text."""
    return {"tag": tag(field, text), "text": neutralise(text)}
