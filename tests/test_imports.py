"""The library's layers import light: a model or a dataset does not pull in the tools' stack."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("hydra", "matplotlib", "tensorboard", "torch.utils.tensorboard")


@pytest.mark.parametrize("module", ["rnlvideo", "rnlvideo.models", "rnlvideo.data"])
def test_importing_a_layer_leaves_the_heavy_modules_out(module: str) -> None:
    probe = f"import sys, {module}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"{module} imported {result.stdout.strip()}"


def test_the_top_level_names_load_on_first_use() -> None:
    probe = (
        "import sys, rnlvideo\n"
        "assert 'rnlvideo.api' not in sys.modules\n"
        "load = rnlvideo.load_model\n"
        "assert 'rnlvideo.api' in sys.modules and load.__module__ == 'rnlvideo.api'\n"
        "try:\n"
        "    rnlvideo.no_such_name\n"
        "except AttributeError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert "has no attribute 'no_such_name'" in result.stdout
