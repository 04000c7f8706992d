"""What the command-line tools share: their ``key=value`` arguments beside Hydra's overrides,
the trust flag, and one-message refusals with their exit statuses."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from rnlvideo.data.frames import VideoDataError
from rnlvideo.engine.distributed import MainRankError
from rnlvideo.engine.resume import ResumeRefusedError, RunDirectoryError
from rnlvideo.engine.trainer import NonFiniteLossError
from rnlvideo.text import printable

# Allows a config to name code outside rnlvideo's builders (README "Trust").
TRUST_FLAG = "--trust-code"
EXIT_FAILED = 1  # training failed after the launch was accepted
EXIT_REFUSED = 2  # the launch or the command was refused; nothing was written
# What the tools report as one message (other errors are bugs and keep their traceback):
# config, checkpoint, list and path errors are ValueErrors; missing files and failed writes
# OSErrors; unreadable videos VideoDataErrors; the run directory's and resume's refusals; a
# missing optional extra (onnxruntime) ImportErrors that say how to install it.
TOOL_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    ImportError,
    VideoDataError,
    RunDirectoryError,
    ResumeRefusedError,
    MainRankError,
    NonFiniteLossError,
)


def exit_refused(
    logger: logging.Logger, err: BaseException, status: int = EXIT_REFUSED
) -> NoReturn:
    """Report ``err`` as one escaped message (no traceback) and exit with ``status``."""
    logger.error("%s", printable(str(err) or type(err).__name__, keep_newlines=True))
    sys.exit(status)


def misspelt_trust_flag(argv: Sequence[str]) -> str | None:
    """The first argument that looks like :data:`TRUST_FLAG` misspelt (``--trust_code``)."""
    for arg in argv:
        if arg != TRUST_FLAG and arg.lstrip("-").lower().replace("_", "-") in (
            "trust-code",
            "trustcode",
            "trust",
        ):
            return arg
    return None


def parse_value(text: str) -> Any:
    """A tool argument's value.

    Lists (``[a,b]``, ``[[4,0.5,0.5]]``) are parsed with Hydra's override syntax; anything else
    (a path, a name) is kept as the plain string.
    """
    if not text.startswith("["):
        return text
    try:
        return OverridesParser.create().parse_override(f"value={text}").value()
    except HydraException as err:
        raise ValueError(f"cannot read the list {text!r}: {str(err).splitlines()[0]}") from None


def parse_flag(value: Any, key: str) -> bool:
    """A tool argument that is ``true`` or ``false``; anything else is refused."""
    text = str(value).lower()
    if text not in ("true", "false"):
        raise ValueError(f"{key}={value}: expected true or false")
    return text == "true"


def split_tool_args(argv: Sequence[str], names: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Separate ``name=value`` arguments meant for the tool from the Hydra overrides.

    Returns ``({name: parsed value}, remaining overrides in order)``; the flag
    :data:`TRUST_FLAG`, when given, appears in the dict with the value True.
    """
    misspelt = misspelt_trust_flag(argv)
    if misspelt:
        raise ValueError(f"unknown option {misspelt}: did you mean {TRUST_FLAG}?")
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
