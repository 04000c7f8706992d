"""Long runs you can trust: no lost epochs, run directories, resume checks, preemption."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rnlvideo.checkpoint_format import load_checkpoint
from rnlvideo.config import compose_config
from rnlvideo.engine.distributed import init_distributed
from rnlvideo.engine.loaders import make_loader
from rnlvideo.engine.preemption import EXIT_PREEMPTED, Preempted
from rnlvideo.engine.resume import RunDirectoryError
from rnlvideo.engine.trainer import ResumeRefusedError, Trainer
from tests.conftest import tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]
# Exactly reproducible runs: no dropout, deterministic kernels, validation only at the end.
EXACT = ("model.dropout=0", "train.deterministic=true", "train.eval_every_epochs=0")


def make_trainer(dataset: Path, run_dir: Path, *extra: str) -> Trainer:
    cfg = compose_config(tiny_run_overrides(dataset, run_dir, *extra))
    return Trainer(cfg, init_distributed("cpu"), run_dir)


def digests(run_dir: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.iterdir())
        if p.is_file()
    }


def test_a_failed_validation_keeps_the_epoch(tiny_dataset: Path, tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    trainer = make_trainer(tiny_dataset, run_dir)

    def broken(self):
        raise MemoryError("out of memory during validation")

    monkeypatch.setattr(Trainer, "validate", broken)
    with pytest.raises(MemoryError):
        trainer.fit()
    state = load_checkpoint(run_dir / "last.pt")
    assert state["progress"]["epoch"] == 1 and state["progress"]["pending_validation"]
    assert not (run_dir / "best.pt").exists()

    monkeypatch.undo()
    resumed = make_trainer(tiny_dataset, run_dir)
    assert resumed.progress.epoch == 1
    resumed.fit()  # the missed validation runs first
    state = load_checkpoint(run_dir / "last.pt")
    assert not state["progress"]["pending_validation"] and state["progress"]["best_top1"] >= 0
    assert (run_dir / "best.pt").is_file() and (run_dir / "metrics.json").is_file()


def test_resume_never_touches_nothing_and_overwrite_replaces(tiny_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    make_trainer(tiny_dataset, run_dir, "train.eval_every_epochs=0").fit()
    before = digests(run_dir)
    with pytest.raises(RunDirectoryError, match="holds checkpoints of an earlier run"):
        make_trainer(tiny_dataset, run_dir, "train.resume=never")
    assert digests(run_dir) == before  # byte-identical, nothing added

    fresh = make_trainer(tiny_dataset, run_dir, "train.resume=overwrite", "train.epochs=0")
    assert fresh.progress.global_step == 0
    assert not (run_dir / "last.pt").exists() and not (run_dir / "epoch_0001.pt").exists()
    fresh.close()


def test_rotation_deletes_only_this_runs_epoch_files(tiny_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    trainer = make_trainer(
        tiny_dataset, run_dir, "train.epochs=3", "train.keep_last_epochs=1", *EXACT
    )
    foreign = run_dir / "epoch_0100.pt"
    foreign.write_bytes(b"another run's checkpoint")
    trainer.fit()
    names = sorted(p.name for p in run_dir.glob("epoch_*.pt"))
    assert names == ["epoch_0003.pt", "epoch_0100.pt"]
    assert foreign.read_bytes() == b"another run's checkpoint"


def test_a_second_run_on_the_same_directory_is_refused(tiny_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    first = make_trainer(tiny_dataset, run_dir)
    with pytest.raises(RunDirectoryError, match=rf"in use by another run \(pid {os.getpid()}"):
        make_trainer(tiny_dataset, run_dir)
    first.close()
    make_trainer(tiny_dataset, run_dir).close()  # released: usable again


def test_resume_refuses_config_changes_unless_forced(tiny_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    make_trainer(tiny_dataset, run_dir, "train.eval_every_epochs=0").fit()
    with pytest.raises(ResumeRefusedError, match=r"optim\.lr: 0\.002 -> 0\.004") as refused:
        make_trainer(tiny_dataset, run_dir, "optim.lr=4e-3", "model.dropout=0.5")
    assert "model.dropout: 0.2 -> 0.5" in str(refused.value)
    assert "train.resume=force" in str(refused.value)

    allowed = make_trainer(  # documented harmless changes: a longer run, workers, eval
        tiny_dataset, run_dir, "train.epochs=2", "eval.batch_size=3", "train.num_workers=1"
    )
    assert allowed.progress.epoch == 1
    allowed.close()
    forced = make_trainer(tiny_dataset, run_dir, "optim.lr=4e-3", "train.resume=force")
    assert forced.progress.epoch == 1
    forced.close()


def test_a_corrupt_last_pt_falls_back_to_the_newest_loadable(
    tiny_dataset: Path, tmp_path: Path, caplog
):
    run_dir = tmp_path / "run"
    common = ("train.epochs=2", "train.eval_every_epochs=0")
    make_trainer(tiny_dataset, run_dir, *common).fit()
    last = run_dir / "last.pt"
    truncated = last.read_bytes()[:1000]
    last.unlink()  # epoch_0002.pt is a hard link to the same file: keep it intact
    last.write_bytes(truncated)
    resumed = make_trainer(tiny_dataset, run_dir, *common)
    assert resumed.progress.epoch == 2  # from epoch_0002.pt
    assert "last.pt: not a readable checkpoint" in caplog.text
    resumed.close()


def stop_after_steps(monkeypatch, steps: int) -> None:
    """Send this process SIGTERM right after optimiser step ``steps`` (like SLURM would)."""
    original = Trainer._optimizer_step

    def step_then_signal(self, finite):
        original(self, finite)
        if self.progress.global_step == steps:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_optimizer_step", step_then_signal)


def test_sigterm_mid_epoch_then_relaunch_is_bit_identical(
    tiny_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    common = ("train.epochs=2", "train.checkpoint_every_steps=0", *EXACT)
    reference = make_trainer(tiny_dataset, tmp_path / "ref", *common)
    reference.fit()

    run_dir = tmp_path / "stopped"
    stop_after_steps(monkeypatch, 8)  # epoch 2 of 6 steps each, mid-way
    with pytest.raises(Preempted):
        make_trainer(tiny_dataset, run_dir, *common).fit()
    state = load_checkpoint(run_dir / "last.pt")
    assert state["progress"]["epoch"] == 1 and state["progress"]["batch_in_epoch"] == 2
    assert state["progress"]["global_step"] == 8
    monkeypatch.undo()

    make_trainer(tiny_dataset, run_dir, *common).fit()
    expected = load_checkpoint(tmp_path / "ref" / "last.pt")["model"]
    got = load_checkpoint(run_dir / "last.pt")["model"]
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different


def test_a_mid_epoch_resume_with_another_batch_layout(tiny_dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    stop_after_steps(monkeypatch, 2)
    with pytest.raises(Preempted):
        make_trainer(tiny_dataset, run_dir, *EXACT).fit()
    monkeypatch.undo()
    with pytest.raises(ResumeRefusedError, match="batch_size 4 -> 2"):
        make_trainer(
            tiny_dataset, run_dir, *EXACT, "train.batch_size=2", "train.total_batch_size=4"
        )
    restarted = make_trainer(
        tiny_dataset,
        run_dir,
        *EXACT,
        "train.batch_size=2",
        "train.total_batch_size=4",
        "train.resume=force",
    )
    assert restarted.progress.batch_in_epoch == 0 and restarted.progress.global_step == 0
    restarted.close()


def test_train_tool_exits_75_on_sigterm_with_a_checkpoint(tiny_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = tiny_run_overrides(
        tiny_dataset, run_dir, "train.epochs=20", "train.log_every_steps=1", "train.batch_size=2"
    )
    proc = subprocess.Popen(
        [sys.executable, "tools/train.py", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    for line in proc.stdout:
        if "epoch 1/20 [2/" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, rest[-2000:]
    assert "\r" not in rest  # a log file gets lines, not a progress bar
    progress = load_checkpoint(run_dir / "last.pt")["progress"]
    assert progress["global_step"] >= 2 and progress["epoch"] < 20
    assert "relaunch the same command to resume" in rest


def test_multirun_jobs_get_their_own_run_directories(tiny_dataset: Path, tmp_path: Path):
    sweep = tmp_path / "sweep"
    args = [
        a
        for a in tiny_run_overrides(tiny_dataset, tmp_path / "unused", "train.epochs=0")
        if not a.startswith("output_dir=")
    ]
    result = subprocess.run(
        [
            sys.executable,
            "tools/train.py",
            "--multirun",
            *args,
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2 and runs[0] != runs[1]
    seeds = sorted(yaml.safe_load((r / "config_resolved.yaml").read_text())["seed"] for r in runs)
    assert seeds == [0, 1]


def test_a_failed_checkpoint_write_on_rank_0_stops_every_rank(tiny_dataset: Path, tmp_path: Path):
    script = tmp_path / "failing_save.py"
    script.write_text(
        "import sys\n"
        "from rnlvideo.config import compose_config\n"
        "from rnlvideo.engine import trainer\n"
        "from rnlvideo.engine.distributed import init_distributed\n"
        "def full_disk(state, path):\n"
        "    raise OSError(28, 'No space left on device')\n"
        "trainer.save_atomic = full_disk\n"
        "cfg = compose_config(sys.argv[1:])\n"
        "ctx = init_distributed('cpu', timeout_s=600)\n"
        "trainer.Trainer(cfg, ctx, cfg.output_dir).fit()\n"
    )
    args = tiny_run_overrides(tiny_dataset, tmp_path / "run", "train.batch_size=2")
    started = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            str(script),
            *args,
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "rank 0 failed: OSError: [Errno 28] No space left on device" in result.stderr
    assert time.time() - started < 300  # not the 600 s collective timeout


def test_a_stuck_loader_worker_times_out() -> None:
    class Stuck(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int):
            time.sleep(30)
            return index

    loader = make_loader(
        Stuck(), torch.utils.data.SequentialSampler(range(4)), 2, 1, False, timeout=1
    )
    with pytest.raises(RuntimeError, match="timed out after 1 seconds"):
        next(iter(loader))


def test_a_forced_resume_with_other_parameter_groups_is_refused_clearly(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    trainer = make_trainer(tiny_dataset, run_dir, *EXACT)
    trainer.fit()
    trainer.close()
    with pytest.raises(ResumeRefusedError, match="4 parameter groups, this run's .* has 3"):
        make_trainer(
            tiny_dataset,
            run_dir,
            *EXACT,
            "optim.no_weight_decay_norm_bias=false",
            "train.epochs=2",
            "train.resume=force",
        )
