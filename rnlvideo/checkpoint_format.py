"""Checkpoint files: what they hold, and reading them without running code.

A checkpoint (format 2) is a dict of tensors and plain data, loaded with
``torch.load(weights_only=True)``:

- ``model``: the model's state dict (training checkpoints also hold ``optimizer``,
  ``scheduler``, ``scaler``, ``progress``, ``rng``, ``world_size``);
- ``config``: the run's config as plain data (interpolations between keys kept, see
  :func:`rnlvideo.config.portable_config`), so the model can be rebuilt without ``configs/``;
- ``class_names`` and ``num_classes``;
- ``versions``: the rnlvideo version, the git commit of the code that wrote it and the torch
  version;
- ``format_version``: 2.

Checkpoints of format 1 (no ``format_version``) stored the resolved config as a YAML string;
:func:`stored_config` reads both.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import torch
import yaml

from rnlvideo.version import __version__

FORMAT_VERSION = 2
# Keys of format-1 configs that no longer exist (their meaning moved into code).
_FORMAT1_REMOVED_KEYS = (
    ("ckpt",),
    ("data", "test"),
    ("data", "test_views"),
    ("protocol", "dataset"),
)


# Epoch files a run writes and may later rotate away (``progress.epoch_files``).
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")
# ``progress`` entries of a training checkpoint and their types (missing ones: defaults).
_PROGRESS_TYPES: dict[str, tuple[type, ...]] = {
    "epoch": (int,),
    "batch_in_epoch": (int,),
    "global_step": (int,),
    "best_top1": (int, float),
    "skipped_steps": (int,),
    "pending_validation": (bool,),
    "epoch_files": (list,),
}


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what is wrong."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with ``weights_only=True`` (no arbitrary unpickling).

    Raises FileNotFoundError, or CheckpointError for a file that is not a readable checkpoint
    (truncated, corrupt, or holding objects other than tensors and plain containers).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_reason(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(state).__name__}")
    return state


def _reason(err: Exception) -> str:
    """The informative line of torch.load's error (its unpickler's complaint, if any)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Unpickler error" in line:
            return line
    return lines[0] if lines else type(err).__name__


def stored_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The config a checkpoint stores, as a plain container in today's layout (unvalidated).

    Raises CheckpointError when the file holds no config (a bare state dict, or a checkpoint
    of another code base).
    """
    config = checkpoint.get("config")
    if checkpoint.get("format_version") is None and isinstance(config, str):
        try:
            config = yaml.safe_load(config)
        except yaml.YAMLError as err:
            reason = str(err).splitlines()[0]
            raise CheckpointError(
                f"{path}: its stored YAML config cannot be read ({reason})"
            ) from None
        if isinstance(config, dict):
            for keys in _FORMAT1_REMOVED_KEYS:
                _drop(config, keys)
    if isinstance(config, dict):
        _upgrade_batch_keys(config, checkpoint.get("batch_layout"))
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: holds no rnlvideo config, so the model cannot be rebuilt from it. "
            "For bare weights, build the model from overrides: "
            "rnlvideo.build_model_from_config([...], checkpoint=PATH)"
        )
    return config


def _upgrade_batch_keys(config: dict[str, Any], layout: Any) -> None:
    """Rename the batch keys of checkpoints written before ``train.total_batch_size``.

    ``train.lr_reference_batch`` meant what ``train.lr_total_batch_size`` means. An
    ``train.accumulate_steps`` above 1 becomes the total batch the run trained at.
    """
    train = config.get("train")
    if not isinstance(train, dict):
        return
    if "lr_reference_batch" in train:
        train.setdefault("lr_total_batch_size", train.pop("lr_reference_batch"))
    if "accumulate_steps" in train:
        steps = train.pop("accumulate_steps")
        total = layout.get("total_batch_size") if isinstance(layout, dict) else None
        train.setdefault("total_batch_size", total if steps != 1 else None)


def _drop(container: Any, keys: tuple[str, ...]) -> None:
    for key in keys[:-1]:
        container = container.get(key) if isinstance(container, dict) else None
    if isinstance(container, dict):
        container.pop(keys[-1], None)


def stored_class_names(checkpoint: dict[str, Any], path: str | Path) -> list[str] | None:
    """The class names a checkpoint stores (format 2), or None when it stores none.

    Raises CheckpointError when ``class_names`` is not a list of strings, or disagrees with
    the stored ``num_classes``.
    """
    names = checkpoint.get("class_names")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: class_names must be a list of strings")
    count = checkpoint.get("num_classes", len(names))
    if count != len(names):
        raise CheckpointError(f"{path}: {len(names)} class_names for num_classes={count!r}")
    return names


def stored_progress(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``progress`` entries, type-checked (``{}`` when it has none).

    Raises CheckpointError naming the entry for a non-mapping, an unknown entry, a value of
    the wrong type or a negative count, and for an epoch file name other than
    ``epoch_NNNN.pt`` (rotation deletes those files).
    """
    progress = checkpoint.get("progress", {})
    if not isinstance(progress, dict):
        raise CheckpointError(f"{path}: progress must be a mapping, got {type(progress).__name__}")
    for key, value in progress.items():
        types = _PROGRESS_TYPES.get(key)
        if types is None:
            raise CheckpointError(f"{path}: unknown progress entry {key!r}")
        wrong_bool = isinstance(value, bool) and bool not in types
        if not isinstance(value, types) or wrong_bool:
            expected = " or ".join(t.__name__ for t in types)
            raise CheckpointError(f"{path}: progress.{key}={value!r}: expected {expected}")
        if key != "best_top1" and isinstance(value, int) and not wrong_bool and value < 0:
            raise CheckpointError(f"{path}: progress.{key}={value!r}: expected >= 0")
    for name in progress.get("epoch_files", []):
        if not isinstance(name, str) or not EPOCH_FILE.fullmatch(name):
            raise CheckpointError(
                f"{path}: progress.epoch_files holds {name!r}: expected names epoch_NNNN.pt"
            )
    return dict(progress)


@functools.lru_cache(maxsize=1)
def software_versions() -> dict[str, str | None]:
    """The rnlvideo version, the git commit of its source tree (None outside git), torch's."""
    repo = Path(__file__).resolve().parents[1]
    commit = None
    if (repo / ".git").exists():
        try:
            result = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            commit = result.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"rnlvideo": __version__, "git_commit": commit, "torch": str(torch.__version__)}


def checkpoint_metadata(config: dict[str, Any], class_names: list[str]) -> dict[str, Any]:
    """The format-2 entries that make a checkpoint self-contained (see the module docstring)."""
    return {
        "format_version": FORMAT_VERSION,
        "config": config,
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "versions": dict(software_versions()),
    }
