"""Command-line arguments of the tools: their own ``key=value`` arguments beside Hydra's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

# Allows a config to name code outside rnlvideo's builders (README "Trust").
TRUST_FLAG = "--trust-code"


def parse_value(text: str) -> Any:
    """A tool argument's value.

    Lists (``[a,b]``, ``[[4,0.5,0.5]]``) are parsed with Hydra's override syntax; anything else
    (a path, a name) is kept as the plain string.
    """
    if not text.startswith("["):
        return text
    return OverridesParser.create().parse_override(f"value={text}").value()


def split_tool_args(argv: Sequence[str], names: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Separate ``name=value`` arguments meant for the tool from the Hydra overrides.

    Returns ``({name: parsed value}, remaining overrides in order)``; the flag
    :data:`TRUST_FLAG`, when given, appears in the dict with the value True.
    """
    names = set(names)
    own: dict[str, Any] = {}
    overrides: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if arg == TRUST_FLAG:
            own[TRUST_FLAG] = True
        elif sep and key in names:
            own[key] = parse_value(value)
        else:
            overrides.append(arg)
    return own, overrides
