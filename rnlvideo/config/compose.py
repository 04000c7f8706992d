"""Configs from ``configs/`` plus command-line overrides, and overrides on a stored config.

:func:`compose_config` is what ``tools/train.py`` runs with. A checkpoint stores its config as
plain data (:func:`portable_config`); :func:`apply_overrides` changes keys of such a config
with the same ``key=value`` syntax, without reading ``configs/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from rnlvideo.config.errors import ConfigError
from rnlvideo.config.schema import PROTOCOL_PRESETS, register_schemas
from rnlvideo.config.validation import resolver_calls, validate_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
# Config groups of configs/ (a checkpoint's model and data are fixed: only protocol presets
# can be chosen by name when overriding a stored config).
CONFIG_GROUPS = ("model", "placement", "data", "optim", "schedule", "protocol", "experiment")

# Overrides for runs whose weights must match across process layouts (1 process against
# several, one node against two): frozen BatchNorm, no dropout, deterministic kernels and a
# small lr, because with frozen BN a from-scratch net is chaotic enough at the demo's lr for
# reduction-order rounding (1e-8) to grow past a tight tolerance; no evaluation.
REPRODUCIBLE_RUN_OVERRIDES = (
    "train.freeze_bn=true",
    "model.dropout=0",
    "train.deterministic=true",
    "train.eval_every_epochs=0",
    "optim=sgd",
    "optim.lr=0.005",
)


def compose_config(
    overrides: Sequence[str] = (), config_name: str = "config", trust_code: bool = False
) -> DictConfig:
    """The validated config ``tools/train.py`` would run with these command-line overrides.

    Raises ConfigError (or Hydra's composition error) naming the key at fault.
    """
    register_schemas()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="rnlvideo"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    cfg.overrides = list(overrides)
    return validate_config(cfg, trust_code=trust_code)


def portable_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as plain data for a checkpoint: resolver calls resolved, key references kept.

    ``${oc.env:...}`` or ``${hydra:...}`` only make sense where the run happened, so their
    values are stored; ``${data.root}/...`` stays a reference, so that changing ``data.root``
    when evaluating elsewhere moves every path that derives from it.
    """
    container = OmegaConf.to_container(cfg, resolve=False)
    for key, _ in resolver_calls(container):
        _set_path(container, key, OmegaConf.select(cfg, key))
    return container


def _set_path(container: Any, dotted: str, value: Any) -> None:
    """Set ``a.b[2].c`` in a plain container."""
    parts = dotted.replace("[", ".[").split(".")
    node = container
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value


_ABSENT = object()


def apply_overrides(
    cfg: DictConfig,
    overrides: Sequence[str],
    trust_code: bool = False,
    protocol: str | None = None,
) -> DictConfig:
    """A stored config with command-line style overrides applied, then validated again.

    ``key=value`` changes an existing key, ``+key=value`` adds one, ``++key=value`` sets
    either way, ``~key`` deletes one; values use Hydra's override syntax. ``protocol=NAME``
    (or the argument ``protocol``, applied before the overrides) picks a test-protocol preset
    (``1x1``, ``2x3``, ``10x3``). Other config groups (``model=``, ``data=``,
    ``+experiment=``) are refused: a checkpoint's model and data are the ones it was trained
    with, so change their keys instead (``data.root=...``).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    container = OmegaConf.to_container(cfg, resolve=False)
    result = OmegaConf.create(container)
    if protocol is not None:
        result = select_protocol(result, protocol)
    for override in parsed:
        text = override.input_line
        key = override.key_or_group
        if override.is_sweep_override() or override.package:
            raise ConfigError(f"{text}: sweeps and @package overrides do not apply here")
        if key in CONFIG_GROUPS:
            if key != "protocol":
                raise ConfigError(
                    f"{text}: a checkpoint's {key} is the one it was trained with; change its "
                    f"keys instead (for example data.root=/path/to/data)"
                )
            result = select_protocol(result, override.value())
            continue
        exists = OmegaConf.select(result, key, default=_ABSENT) is not _ABSENT
        if override.is_delete():
            if not exists:
                raise ConfigError(f"{text}: no key {key!r} to delete")
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(result, parent) if parent else result
            del node[leaf]
            continue
        if override.is_add() and exists:
            raise ConfigError(f"{text}: {key!r} exists; use {key}=... to change it")
        if not (override.is_add() or override.is_force_add()) and not exists:
            raise ConfigError(f"{text}: unknown key {key!r} (use +{key}=... to add one)")
        OmegaConf.update(result, key, override.value(), merge=False, force_add=True)
    return validate_config(result, trust_code=trust_code)


def select_protocol(cfg: DictConfig, name: Any) -> DictConfig:
    """``cfg`` with the test-protocol preset ``name`` (``1x1``, ``2x3``, ``10x3``) as its
    ``protocol``; raises ConfigError for another name."""
    if name not in PROTOCOL_PRESETS:
        raise ConfigError(f"protocol={name}: expected one of {', '.join(PROTOCOL_PRESETS)}")
    chosen = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    chosen.protocol = OmegaConf.structured(PROTOCOL_PRESETS[name])
    return chosen
