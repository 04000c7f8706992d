"""Shared fixtures: a tiny synthetic dataset and the overrides of a tiny training run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rnlvideo.data.synthetic import generate_synthetic_dataset

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def module_tmp_path(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A directory for a module's fixtures, deleted after the module unless a test failed
    (pytest's retention policy deletes a passing test's own ``tmp_path`` only): a training run's
    checkpoints take hundreds of MB."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failures_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failures_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 training and 1 validation video per class, 16-20 frames each."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(
        root,
        videos_per_class_train=2,
        videos_per_class_val=1,
        seed=0,
        min_frames=16,
        max_frames=20,
        num_workers=1,
    )
    return root


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 training and 1 validation video per class, 8-10 frames each (read-only: copy it to
    change it)."""
    root = tmp_path_factory.mktemp("synthetic_small")
    generate_synthetic_dataset(
        root,
        videos_per_class_train=1,
        videos_per_class_val=1,
        min_frames=8,
        max_frames=10,
        num_workers=1,
    )
    return root


def tiny_run_overrides(dataset: Path, run_dir: Path, *extra: str) -> list[str]:
    """A resnet18 RNL-TSM at 32 px, 4 segments, 1 epoch, on ``dataset``."""
    return [
        "+experiment=demo",
        f"data.root={dataset}",
        f"output_dir={run_dir}",
        "data.num_segments=4",
        "data.input_size=32",
        "data.scale_size=37",
        "train.epochs=1",
        "train.batch_size=4",
        "train.num_workers=0",
        "train.device=cpu",
        "train.checkpoint_every_epochs=1",
        "eval.batch_size=8",
        "eval.num_workers=0",
        *extra,
    ]
