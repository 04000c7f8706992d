"""A process killed while writing last.pt never leaves a corrupt or partial checkpoint."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rnlvideo.checkpoint_format import load_checkpoint
from rnlvideo.files import remove_stale_temporaries

WRITER = """
import sys, torch
from rnlvideo.files import save_atomic
path = sys.argv[1]
step = 0
while True:
    step += 1
    save_atomic({"step": step, "weights": torch.full((4_000_000,), float(step))}, path)
    print(step, flush=True)
"""


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_last_pt(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    repo = Path(__file__).resolve().parents[1]
    rng = random.Random(0)
    last_step = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            cwd=repo,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline()  # at least one complete write
        time.sleep(rng.uniform(0.0, 0.3))  # 16 MB writes: the kill often lands mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(path)
        step = state["step"]
        assert step >= 1
        assert torch.equal(state["weights"], torch.full((4_000_000,), float(step)))
        last_step = step
    assert last_step >= 1
    # A killed writer may leave its temporary file behind (never a damaged last.pt); the trainer
    # removes such files when it starts.
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
