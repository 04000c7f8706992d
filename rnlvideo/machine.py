"""One line naming the machine a benchmark ran on, for the figures it prints."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def machine_description(device: str) -> str:
    """The GPU's name for ``device="cuda"``; otherwise the CPU model, its core count, torch's
    thread count and the load average (benchmark figures on a loaded machine are not comparable)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpu = "CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{load}"
