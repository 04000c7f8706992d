"""Validate a whole config before anything is built from it.

One function serves the configs composed from ``configs/`` and the configs stored in
checkpoints (untrusted input): :func:`validate_config` checks keys and types against the
schema, the value rules, and every ``_target_`` against the allow-list and its builder's
signature. Stored configs must also be plain data: their interpolations may only reference
other keys, never call a resolver.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnlvideo.config.errors import ConfigError
from rnlvideo.config.schema import OPTIM_SCHEMAS, SECTIONS, RootConfig
from rnlvideo.config.targets import check_target_nodes

# ``${name:...}`` calls a resolver (oc.env, hydra, ...); ``${a.b}`` only references a key.
_RESOLVER_CALL = re.compile(r"\$\{\s*[\w.\-]+\s*:")


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{path}[{index}]")
    else:
        yield path, node


def resolver_calls(container: Any) -> list[tuple[str, str]]:
    """``(key, value)`` of every string value that calls an OmegaConf resolver."""
    return [
        (key, value)
        for key, value in _leaves(container)
        if isinstance(value, str) and _RESOLVER_CALL.search(value)
    ]


def _schema_error(err: OmegaConfBaseException, prefix: str = "") -> ConfigError:
    key = getattr(err, "full_key", "") or ""
    key = f"{prefix}.{key}" if prefix and key else prefix or key
    message = str(getattr(err, "msg", err)).splitlines()[0]
    return ConfigError(f"{key}: {message}" if key else message)


def apply_schema(container: Mapping[str, Any]) -> DictConfig:
    """``container`` merged into :class:`RootConfig` and its optimiser's schema.

    Raises ConfigError naming the key for an unknown key or a value of the wrong type.
    """
    try:
        typed = OmegaConf.merge(OmegaConf.structured(RootConfig), container)
    except OmegaConfBaseException as err:
        raise _schema_error(err) from None
    optim = container.get("optim")
    schema = OPTIM_SCHEMAS.get(optim.get("_target_")) if isinstance(optim, Mapping) else None
    if schema is not None:
        try:
            typed.optim = OmegaConf.merge(OmegaConf.structured(schema), optim)
        except OmegaConfBaseException as err:
            raise _schema_error(err, "optim") from None
    return typed


def _typed_sections(cfg: DictConfig) -> Iterator[tuple[str, type]]:
    yield from SECTIONS.items()
    schema = OPTIM_SCHEMAS.get(OmegaConf.select(cfg, "optim._target_", default=None))
    if schema is not None:
        yield "optim", schema


def _rule_problem(value: Any, rules: Mapping[str, Any]) -> str | None:
    choices = rules.get("choices")
    if choices is not None:
        if value not in choices:
            shown = ", ".join("null" if c is None else repr(c) for c in choices)
            return f"expected one of {shown}"
        return None
    if value is None:
        return None
    if "min" in rules and value < rules["min"]:
        return f"expected a value >= {rules['min']}"
    if "above" in rules and value <= rules["above"]:
        return f"expected a value > {rules['above']}"
    if "max" in rules and value > rules["max"]:
        return f"expected a value <= {rules['max']}"
    return None


def check_value_rules(cfg: DictConfig) -> None:
    """Ranges and choices of the schema fields (metadata ``rules``); raises ConfigError."""
    for section, schema in _typed_sections(cfg):
        node = cfg[section]
        for spec in dataclasses.fields(schema):
            key = f"{section}.{spec.name}"
            if OmegaConf.is_missing(node, spec.name):
                raise ConfigError(f"{key}: no value given (it is required)")
            rules = spec.metadata.get("rules")
            if not rules:
                continue
            value = OmegaConf.select(cfg, key, default=MISSING)
            problem = _rule_problem(value, rules)
            if problem:
                raise ConfigError(f"{key}={value!r}: {problem}")


def validate_config(
    cfg: DictConfig | Mapping[str, Any], trust_code: bool = False, stored: bool = False
) -> DictConfig:
    """The config checked and typed by the schema; raises ConfigError naming the key.

    Args:
        cfg: a composed config, or a plain container read from a checkpoint.
        trust_code: allow ``_target_`` names outside rnlvideo's builders (never for input
            from someone else).
        stored: the config comes from a file: interpolations may only reference keys
            (unless ``trust_code``).
    """
    container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    if not isinstance(container, Mapping):
        raise ConfigError(f"expected a config mapping, got {type(container).__name__}")
    if stored and not trust_code:
        calls = resolver_calls(container)
        if calls:
            key, value = calls[0]
            raise ConfigError(
                f"{key}={value!r}: a stored config may only interpolate other keys "
                "(${a.b}), not call resolvers"
            )
    typed = apply_schema(container)
    check_value_rules(typed)
    try:
        resolved = OmegaConf.to_container(typed, resolve=True)
    except OmegaConfBaseException as err:
        raise _schema_error(err) from None
    check_target_nodes(resolved, trust_code=trust_code)
    return typed
