"""Text from files (class names, video paths, config values) made safe to show.

A checkpoint, a list or a category file can come from someone else, and its strings end up on
a terminal, in CSV files that spreadsheets open, and in plots. :func:`printable` escapes what
a terminal would act on, :func:`csv_text` what a spreadsheet would evaluate.
"""

from __future__ import annotations

import unicodedata

# Control, format (bidirectional overrides, ...), surrogate, private and unassigned code
# points, and the line / paragraph separators: a terminal acts on them or draws them unseen.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# A spreadsheet evaluates a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control or invisible character escaped (``\\x1b``, ``\\u202e``).

    ``keep_newlines`` keeps ``\\n`` (multi-line messages); carriage returns are always escaped.
    """
    return "".join(
        _escape(c)
        if unicodedata.category(c) in _HIDDEN_CATEGORIES and not (keep_newlines and c == "\n")
        else c
        for c in text
    )


def csv_text(text: str) -> str:
    """A text cell that a spreadsheet shows as text: a leading ``= + - @`` tab or CR gets a
    ``'`` before it (the usual neutralisation of formula injection)."""
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text
