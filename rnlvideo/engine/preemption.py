"""Stop on a signal at the next step boundary, with a checkpoint, instead of dying mid-step.

SIGTERM (SLURM preemption and time limits, ``kill``), SIGUSR1 (SLURM's early warning,
``#SBATCH --signal``) and SIGINT (Ctrl-C) only set a flag. The trainer asks every rank at each
optimiser-step boundary (:meth:`StopSignals.agreed`), writes ``last.pt`` there and exits with
:data:`EXIT_PREEMPTED`. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import torch

from rnlvideo.engine.distributed import all_reduce_sum

logger = logging.getLogger(__name__)

# sysexits' EX_TEMPFAIL: "try again later"; scripts/slurm_train.sh requeues on it.
EXIT_PREEMPTED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Training stopped on a signal after writing its checkpoint; relaunch to resume."""


class StopSignals:
    """Install flag-setting handlers for :data:`STOP_SIGNALS` (a context manager)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            logger.warning(
                "received %s: writing a checkpoint at the next step, then exiting",
                signal.Signals(signum).name,
            )
        self.received = signum
        if signum == signal.SIGINT:  # a second Ctrl-C aborts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank received a stop signal (a collective: every rank must call it)."""
        flag = torch.tensor([0.0 if self.received is None else 1.0], device=device)
        return float(all_reduce_sum(flag)) > 0
