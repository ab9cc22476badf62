"""What counts as content in a text: something other than white space, control and invisible
characters. A text of only those would embed as the special tokens alone, one and the same vector
for all of them, so it is refused like an empty string; the OpenAPI document's text ``pattern``
says the same thing (:func:`content_pattern`), so schema and check never disagree."""

from __future__ import annotations

import functools
import sys
import unicodedata

#: Unicode categories that carry no content on their own: control (NUL, ...), format (zero-width
#: space and joiners, BOM, ...) and separators (spaces, line and paragraph separators).
_EMPTY_CATEGORIES = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp"))


@functools.lru_cache(maxsize=1)
def content_pattern() -> str:
    """A regular expression (JSON Schema ``pattern``, unanchored) that a text matches when it has
    one character outside the categories above: the request models validate with it and the
    OpenAPI document shows it, so schema and check never disagree."""
    ranges, start, previous = [], None, None
    for code in range(sys.maxunicode + 1):
        empty = unicodedata.category(chr(code)) in _EMPTY_CATEGORIES
        if empty and start is None:
            start = code
        if not empty and start is not None:
            ranges.append((start, previous))
            start = None
        previous = code
    if start is not None:
        ranges.append((start, previous))

    def char(code: int) -> str:  # \uXXXX in the BMP (ECMA-262 and Python alike); beyond, the character
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return "[^" + "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges) + "]"
