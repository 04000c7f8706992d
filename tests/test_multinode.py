"""Two nodes simulated on this machine: scripts/dist_train.sh and scripts/slurm_train.sh.

Two torchrun "nodes" (c10d rendezvous on a free local port, gloo) each run one process of the
tiny demo run; they must end with the weights of one process at the same total batch. The SLURM
launcher runs under the stubs in ``tests/slurm_stubs`` (sbatch, srun, scontrol): two nodes,
SIGUSR1 before the simulated time limit, requeue; it must stop mid-epoch with ``last.pt``,
exit 75, be requeued and resume to the uninterrupted two-node run's weights.

Every launch is bounded by a timeout, and every process it started (found by a marker in its
environment) is killed afterwards, whatever happened.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from rnlvideo.checkpoint_format import load_checkpoint
from rnlvideo.config import REPRODUCIBLE_RUN_OVERRIDES, compose_config
from rnlvideo.engine.distributed import init_distributed
from rnlvideo.engine.preemption import EXIT_PREEMPTED
from rnlvideo.engine.trainer import Trainer
from tests.conftest import tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]
STUBS = Path(__file__).resolve().parent / "slurm_stubs"
MARKER = "RNLVIDEO_TEST_LAUNCH"
LAUNCH_TIMEOUT_S = 300
# Exactly reproducible (tests/conftest.py), batch 1 per process, 12 optimiser steps per epoch
# at a total of 2 clips, a short collective timeout so that a lost peer cannot hang a test.
COMMON = (
    "train.epochs=2",
    *REPRODUCIBLE_RUN_OVERRIDES,
    "train.total_batch_size=2",
    "train.log_every_steps=1",
    "train.dist_timeout_s=120",
)
STEPS = 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def marked_processes(marker: str) -> list[int]:
    """Processes of this user whose environment carries ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@contextmanager
def launches() -> Iterator[dict[str, str]]:
    """An environment for launches; every process started with it is killed on exit."""
    marker = uuid.uuid4().hex
    env = {
        **os.environ,
        MARKER: marker,
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    try:
        yield env
    finally:
        for pid in marked_processes(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run(command: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
        **kwargs,
    )


def two_node_args(dataset: Path, run_dir: Path) -> list[str]:
    return tiny_run_overrides(dataset, run_dir, *COMMON, "train.batch_size=1")


def launch_two_nodes(dataset: Path, run_dir: Path, env: dict[str, str]) -> list[str]:
    """``scripts/dist_train.sh`` on two "nodes" of this machine; each node's output."""
    node_env = {**env, "NNODES": "2", "NPROC": "1", "MASTER_ADDR": "localhost"}
    node_env.update(MASTER_PORT=str(free_port()), RDZV_ID=uuid.uuid4().hex)
    command = ["bash", "scripts/dist_train.sh", *two_node_args(dataset, run_dir)]
    nodes = [
        subprocess.Popen(
            command, cwd=REPO, env=node_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=LAUNCH_TIMEOUT_S)[0].decode() for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    return outputs


@pytest.fixture(scope="module")
def two_node_run(tiny_dataset: Path, module_tmp_path: Path) -> Path:
    """The run directory of an uninterrupted two-node run (killed processes cleaned up)."""
    run_dir = module_tmp_path / "run"
    with launches() as env:
        outputs = launch_two_nodes(tiny_dataset, run_dir, env)
    assert "batch 1 per process x 2 processes x 1 accumulation = 2" in "".join(outputs)
    return run_dir


def assert_same_weights(got: dict, expected: dict, atol: float) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=atol, msg=key)


def test_two_torchrun_nodes_train_like_one_process(tiny_dataset: Path, tmp_path, two_node_run):
    # One process with the nodes' per-process batch (1) and 2 accumulation passes runs the
    # same kernels as they do, on one thread each: the gradients average the same numbers.
    one_dir = tmp_path / "one"
    cfg = compose_config(tiny_run_overrides(tiny_dataset, one_dir, *COMMON, "train.batch_size=1"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = Trainer(cfg, init_distributed("cpu"), one_dir)
        assert single.accumulate == 2
        single.fit()
    finally:
        torch.set_num_threads(threads)
    assert single.progress.global_step == STEPS

    two = load_checkpoint(two_node_run / "last.pt")
    assert two["world_size"] == 2 and two["progress"]["global_step"] == STEPS
    one = load_checkpoint(one_dir / "last.pt")
    assert_same_weights(two["model"], one["model"], atol=0)


def slurm_env(env: dict[str, str], stub_dir: Path) -> dict[str, str]:
    return {
        **env,
        "PATH": f"{STUBS}{os.pathsep}{env['PATH']}",
        "STUB_SLURM_DIR": str(stub_dir),
        "STUB_SLURM_LOG": str(stub_dir / "events.log"),
        "STUB_SLURM_JOB_ID": "77",
        # The simulated time limit nears once the first step of the second epoch is logged.
        "STUB_SLURM_TIME_LIMIT_AFTER": "epoch 2/2 [1/",
        "MASTER_PORT": str(free_port()),
        "GPUS_PER_NODE": "1",
    }


def test_slurm_job_stops_before_the_time_limit_requeues_and_resumes(
    tiny_dataset: Path, tmp_path: Path, two_node_run: Path
):
    stub_dir = tmp_path / "slurm"
    stub_dir.mkdir()
    run_dir = tmp_path / "run"
    output_file = stub_dir / "slurm-77.out"
    script = str(REPO / "scripts" / "slurm_train.sh")
    with launches() as env:
        submitted = run(
            ["sbatch", "--nodes=2", f"--output={output_file}", script]
            + two_node_args(tiny_dataset, run_dir),
            slurm_env(env, stub_dir),
        )
    events = (stub_dir / "events.log").read_text().splitlines()
    output = output_file.read_text() if output_file.exists() else ""
    assert submitted.returncode == 0, f"{events}\n{output[-4000:]}"
    assert [e for e in events if e.startswith(("sbatch", "scontrol"))] == [
        "sbatch start 0",
        "sbatch signal SIGUSR1",
        "scontrol requeue 77",
        f"sbatch exit {EXIT_PREEMPTED}",
        "sbatch start 1",
        "sbatch exit 0",
    ], f"{events}\n{output[-4000:]}"

    stopped = re.search(r"stopped in epoch (\d+) after batch (\d+) \(step (\d+)\)", output)
    assert stopped, output[-4000:]
    epoch, batch, step = map(int, stopped.groups())
    assert epoch == 2 and 0 < batch < STEPS // 2 and step < STEPS  # mid-epoch
    assert f"resumed from {run_dir / 'last.pt'} at epoch 1, batch {batch} (step {step})" in output

    resumed = load_checkpoint(run_dir / "last.pt")
    assert resumed["progress"]["global_step"] == STEPS
    uninterrupted = load_checkpoint(two_node_run / "last.pt")
    assert_same_weights(resumed["model"], uninterrupted["model"], atol=0)
