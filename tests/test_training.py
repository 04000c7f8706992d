"""End-to-end training: smoke run, auto-resume, exact resume after SIGKILL, DDP / total batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnlvideo.checkpoint_format import load_checkpoint
from rnlvideo.config import REPRODUCIBLE_RUN_OVERRIDES, compose_config
from rnlvideo.engine.distributed import init_distributed
from rnlvideo.engine.trainer import NonFiniteLossError, Trainer
from tests.conftest import tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]


def run_tool(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, **kwargs
    )


def test_one_epoch_train_and_evaluate_then_auto_resume(tiny_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cfg = compose_config(tiny_run_overrides(tiny_dataset, run_dir))
    ctx = init_distributed("cpu")
    metrics = Trainer(cfg, ctx, run_dir).fit()

    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["num_videos"] == 12  # 12 classes x 1 validation video
    assert written["views"] == "1x1"
    for key in ("top1", "top5", "mean_class_acc"):
        assert 0.0 <= written[key] <= 100.0
    assert written["top5"] >= written["top1"]
    assert written["top1"] == pytest.approx(metrics["top1"])

    report = run_dir / "eval_final_1x1"
    per_class = (report / "per_class_accuracy.csv").read_text().splitlines()
    assert len(per_class) == 1 + 12  # header + one row per class
    assert len((report / "predictions.csv").read_text().splitlines()) == 1 + 12
    assert json.loads((report / "metrics.json").read_text())["top1"] == written["top1"]
    groups = json.loads((run_dir / "param_groups.json").read_text())
    assert groups["policy"] == "simple"
    assert [g["name"] for g in groups["groups"]] == ["decay", "no_decay", "fc_weight", "fc_bias"]

    state = load_checkpoint(run_dir / "last.pt")
    assert state["progress"]["epoch"] == 1
    assert state["progress"]["global_step"] == 6  # 24 videos / batch 4
    assert any(k.startswith("nonlocal_blocks.") for k in state["model"])
    assert (run_dir / "best.pt").is_file() and (run_dir / "epoch_0001.pt").is_file()

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/top1", "test/top1", "time/clips_per_s"} <= scalars

    # Same output directory again: resumes from last.pt (training done) instead of restarting.
    again = Trainer(cfg, ctx, run_dir)
    assert again.progress.epoch == 1 and again.progress.global_step == 6
    assert torch.equal(
        again.bare_model.head.fc.weight, state["model"]["head.fc.weight"].to(torch.float32)
    )


def test_missing_dataset_fails_at_once_with_preparation_hint(tmp_path: Path) -> None:
    result = run_tool(
        [
            "tools/train.py",
            "+experiment=rnl_sthv1",
            f"data.root={tmp_path}/nowhere",
            f"output_dir={tmp_path}/run",
        ],
        timeout=120,
    )
    assert result.returncode == 2
    assert "datasets/sthv1/README.md" in result.stderr + result.stdout
    assert f"{tmp_path}/nowhere" in result.stderr + result.stdout


def exact_resume_args(dataset: Path, run_dir: Path) -> list[str]:
    return [
        "tools/train.py",
        *tiny_run_overrides(
            dataset,
            run_dir,
            "train.epochs=2",
            "train.deterministic=true",
            "train.checkpoint_every_steps=1",
            "model.dropout=0.5",
        ),
    ]


def test_sigkill_then_resume_is_bit_identical(tiny_dataset: Path, tmp_path: Path) -> None:
    reference = run_tool(exact_resume_args(tiny_dataset, tmp_path / "ref"), timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [sys.executable, *exact_resume_args(tiny_dataset, killed_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed_dir / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)  # a few steps in; the kill may land mid-write of last.pt
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    interrupted_at = load_checkpoint(killed_dir / "last.pt")["progress"]["global_step"]
    assert 0 < interrupted_at < 12

    resumed = run_tool(exact_resume_args(tiny_dataset, killed_dir), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_checkpoint(tmp_path / "ref" / "last.pt")["model"]
    got = load_checkpoint(killed_dir / "last.pt")["model"]
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"weights differ after resume from step {interrupted_at}: {different}"


def test_ddp_two_processes_reach_the_same_total_batch_as_one(tiny_dataset: Path, tmp_path):
    # Total batch 8: 1 process x 4 clips x 2 accumulation, or 2 processes x 2 clips x 2.
    common = [*REPRODUCIBLE_RUN_OVERRIDES, "train.total_batch_size=8"]
    single = run_tool(
        ["tools/train.py", *tiny_run_overrides(tiny_dataset, tmp_path / "one", *common)],
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert "batch 4 per process x 1 processes x 2 accumulation = 8" in single.stdout
    ddp = run_tool(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "tools/train.py",
            *tiny_run_overrides(tiny_dataset, tmp_path / "two", *common, "train.batch_size=2"),
        ],
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "batch 2 per process x 2 processes x 2 accumulation = 8" in ddp.stdout
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["progress"]["global_step"] == two["progress"]["global_step"] == 3
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=0, atol=1e-6, msg=key)
    groups = json.loads((tmp_path / "two" / "param_groups.json").read_text())
    assert groups["policy"] == "release"
    names = [g["name"] for g in groups["groups"]]  # frozen BatchNorms: no "bn" group
    assert names == ["weight", "bias", "nl_weight", "nl_bias", "fc_weight", "fc_bias"]


def train_in_process(dataset: Path, run_dir: Path, *extra: str) -> Trainer:
    cfg = compose_config(tiny_run_overrides(dataset, run_dir, *extra))
    trainer = Trainer(cfg, init_distributed("cpu"), run_dir)
    trainer.fit()
    return trainer


def test_gradient_accumulation_matches_the_larger_batch(tiny_dataset: Path, tmp_path: Path):
    common = ("train.freeze_bn=true", "model.dropout=0", "optim=sgd", "optim.lr=0.005")
    whole = train_in_process(tiny_dataset, tmp_path / "whole", *common)
    accumulated = train_in_process(
        tiny_dataset, tmp_path / "acc", *common, "train.batch_size=2", "train.total_batch_size=4"
    )
    assert accumulated.accumulate == 2
    assert whole.progress.global_step == accumulated.progress.global_step == 6
    expected = whole.bare_model.state_dict()
    for key, value in accumulated.bare_model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6, msg=key)


def test_nonfinite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    explode = ("optim=sgd", "optim.lr=1e20", "train.clip_grad_norm=0", "model.dropout=0")
    run_dir = tmp_path / "run"
    cfg = compose_config(
        tiny_run_overrides(tiny_dataset, run_dir, *explode, "train.checkpoint_every_steps=1")
    )
    trainer = Trainer(cfg, init_distributed("cpu"), run_dir)
    with pytest.raises(NonFiniteLossError, match="non-finite loss.*train.nonfinite=skip"):
        trainer.fit()
    if (run_dir / "last.pt").exists():  # written before the loss diverged: still finite
        state = load_checkpoint(run_dir / "last.pt")["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    skipping = train_in_process(tiny_dataset, tmp_path / "skip", *explode, "train.nonfinite=skip")
    assert skipping.progress.skipped_steps > 0
    assert skipping.progress.global_step == 6


def test_bf16_autocast_and_finetune_from(tiny_dataset: Path, tmp_path: Path) -> None:
    source = train_in_process(tiny_dataset, tmp_path / "src", "train.amp=bf16")
    assert source.progress.global_step == 6
    tuned = train_in_process(
        tiny_dataset,
        tmp_path / "tuned",
        f"train.finetune_from={tmp_path / 'src' / 'last.pt'}",
        "train.epochs=0",
    )
    assert tuned.progress.global_step == 0  # a new schedule, not a resume
    for key, value in source.bare_model.state_dict().items():
        assert torch.equal(tuned.bare_model.state_dict()[key], value), key
