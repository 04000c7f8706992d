"""Bad lists and category files stop a training run at start, before the model is built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rnlvideo.config import compose_config
from rnlvideo.engine import trainer as trainer_module
from rnlvideo.engine.distributed import init_distributed
from rnlvideo.engine.trainer import Trainer
from tests.conftest import tiny_run_overrides


def bad_train_list(dataset: Path, tmp_path: Path) -> tuple[Path, str]:
    lines = (dataset / "train.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0] + " 12"  # 12 classes: labels 0..11
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, f"{path}:5: label 12 is out of range: expected 0 <= label < 12"


def escaping_val_list(dataset: Path, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "val.txt"
    path.write_text((dataset / "val.txt").read_text() + "../frames/3 16 0\n")
    return path, f"{path}:13: path '../frames/3' has a '..' part"


def empty_val_list(dataset: Path, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "val.txt"
    path.write_text("\n")
    return path, f"{path}: the list names no videos"


def short_category_file(dataset: Path, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "category.txt"
    path.write_text("".join(f"class {i}\n" for i in range(11)))
    return path, f"{path}: 11 classes, data.num_classes is 12"


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (bad_train_list, "data.train.list_file"),
        (escaping_val_list, "data.val.list_file"),
        (empty_val_list, "data.val.list_file"),
        (short_category_file, "data.category_file"),
    ],
    ids=["label", "path", "empty", "categories"],
)
def test_bad_input_stops_the_trainer_before_the_model(
    tiny_dataset, tmp_path, monkeypatch, make, key
):
    def no_model(cfg):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(trainer_module, "build_model", no_model)
    path, message = make(tiny_dataset, tmp_path)
    cfg = compose_config(tiny_run_overrides(tiny_dataset, tmp_path / "run", f"{key}={path}"))
    with pytest.raises(Exception, match=re.escape(message)) as error:
        Trainer(cfg, init_distributed("cpu"), tmp_path / "run")
    assert not isinstance(error.value, AssertionError)
    assert not (tmp_path / "run" / "last.pt").exists()
