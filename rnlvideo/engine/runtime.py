"""Process-level set-up shared by the CLI tools: logging that only rank 0 shows."""

from __future__ import annotations

import logging
import warnings

from rnlvideo.engine.distributed import DistContext


def quiet_non_main_ranks(ctx: DistContext) -> None:
    """Rank 0 alone logs INFO; other ranks only report warnings and errors."""
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
        warnings.filterwarnings("ignore")
