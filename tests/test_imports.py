"""The library's layers import light: a model or a dataset does not pull in the tools' stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


# Which parts of the package each part may import (docs/architecture.md, "Layers").
ALLOWED_IMPORTS = {
    "version": set(),
    "files": set(),
    "text": set(),
    "machine": set(),
    "checkpoint_format": {"version"},
    "config": {"text"},
    "models": set(),
    "data": {"config", "files", "text"},
    "engine": {"checkpoint_format", "config", "data", "files", "models", "text"},
    "analysis": {"data", "engine", "config", "models", "text"},
    "deploy": {"analysis", "checkpoint_format", "config", "data", "engine", "models", "text"},
    "api": {"analysis", "config", "data", "deploy", "engine", "models"},
    "cli": {"data", "engine", "text"},
    "rnlvideo": {"version", "api", "config"},
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "rnlvideo":
        return None
    return parts[1] if len(parts) > 1 else "rnlvideo"


def test_no_import_runs_upward() -> None:
    package = Path(__file__).resolve().parents[1] / "rnlvideo"
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        relative = path.relative_to(package.parent).with_suffix("")
        module = ".".join(p for p in relative.parts if p != "__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if _part(name) not in (None, _part(module)):
                    found.setdefault(_part(module), set()).add(_part(name))
    for part, imported in found.items():
        assert imported <= ALLOWED_IMPORTS[part], (
            f"{part} imports {imported - ALLOWED_IMPORTS[part]}"
        )
