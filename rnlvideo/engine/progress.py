"""Training progress on rank 0: a tqdm bar on a terminal, compact log lines in a log file."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

logger = logging.getLogger(__name__)


def interactive() -> bool:
    """Whether progress bars can redraw in place (standard error is a terminal)."""
    return sys.stderr.isatty()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class EpochProgress:
    """Progress of one training epoch.

    On an interactive terminal a tqdm bar with the loss and lr; otherwise (a log file, a
    SLURM job) one line every ``every`` batches and one at the end of the epoch:
    ``epoch 3/20 [120/360] loss 1.234 lr 1.20e-03 data 0.010s step 0.300s 53.3 clips/s eta 1m12s``
    (data and step: seconds per batch over the window). Silent when not ``enabled``.
    """

    def __init__(
        self,
        epoch: int,
        epochs: int,
        total: int,
        initial: int = 0,
        every: int = 20,
        enabled: bool = True,
        bar: bool | None = None,
    ) -> None:
        self.desc = f"epoch {epoch + 1}/{epochs}"
        self.total, self.done, self.every, self.enabled = total, initial, every, enabled
        self.bar = (
            tqdm(total=total, initial=initial, desc=self.desc, dynamic_ncols=True)
            if enabled and (interactive() if bar is None else bar)
            else None
        )
        self._window_start = time.perf_counter()
        self._window = {"batches": 0, "clips": 0, "data": 0.0}
        self._loss, self._lr = float("nan"), float("nan")

    def update(self, loss: float, lr: float, clips: int, data_time: float) -> None:
        """One batch done: its loss, the lr, its clips (all ranks) and its data wait (s)."""
        self.done += 1
        self._loss, self._lr = loss, lr
        self._window["batches"] += 1
        self._window["clips"] += clips
        self._window["data"] += data_time
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        elif self.enabled and self.done % self.every == 0:
            self._log_line()

    def _log_line(self) -> None:
        elapsed = time.perf_counter() - self._window_start
        batches = max(self._window["batches"], 1)
        per_batch = elapsed / batches
        logger.info(
            "%s [%d/%d] loss %.3f lr %.2e data %.3fs step %.3fs %.1f clips/s eta %s",
            self.desc,
            self.done,
            self.total,
            self._loss,
            self._lr,
            self._window["data"] / batches,
            per_batch,
            self._window["clips"] / max(elapsed, 1e-9),
            _duration(per_batch * (self.total - self.done)),
        )
        self._window_start = time.perf_counter()
        self._window = {"batches": 0, "clips": 0, "data": 0.0}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self._window["batches"]:
            self._log_line()
