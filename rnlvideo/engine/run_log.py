"""The run's text log (``train.log``), opened only once the launch is accepted.

A launch that is refused (the directory is in use, resuming would change the run, ...) must
not write into the run directory, so the log lines of the start are held in memory by
:class:`PendingLog` and written to ``train.log`` with everything after them once the trainer
accepts the launch.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class PendingLog(logging.Handler):
    """Keeps the root logger's records until :meth:`write_to` names the log file.

    Install it with :meth:`install` before anything logs. :meth:`write_to` appends the held
    records to the file and from then on logs to it directly; :meth:`uninstall` removes the
    handlers (a refused launch drops the held records).
    """

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self.file_handler: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def install(self) -> PendingLog:
        logging.getLogger().addHandler(self)
        return self

    def write_to(self, path: str | Path) -> None:
        """Append the held records to ``path`` and log there from now on."""
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setLevel(self.level)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        for record in self.records:
            handler.handle(record)
        self.records = []
        root = logging.getLogger()
        root.removeHandler(self)
        root.addHandler(handler)
        self.file_handler = handler

    def uninstall(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        if self.file_handler is not None:
            root.removeHandler(self.file_handler)
            self.file_handler.close()
            self.file_handler = None
        self.records = []
