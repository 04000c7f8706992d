"""Validate a whole config before anything is built from it.

One function serves the configs composed from ``configs/`` and the configs stored in
checkpoints (untrusted input): :func:`validate_config` checks keys and types against the
schema, the value rules, and every ``_target_`` against the allow-list and its builder's
signature. Stored configs must also be plain data: their interpolations may only reference
other keys by a fixed name, never call a resolver (checked with OmegaConf's own grammar).

A config is resolved once (:func:`resolved_container`); a value that still holds ``${``
afterwards is refused, so nothing can become an interpolation by being resolved. Builders are
called on that resolved plain data (:mod:`rnlvideo.config.build`), never resolved again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from antlr4 import ParserRuleContext
from omegaconf import MISSING, DictConfig, OmegaConf, grammar_parser
from omegaconf.errors import GrammarParseError, OmegaConfBaseException
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

from rnlvideo.config.errors import ConfigError
from rnlvideo.config.schema import OPTIM_SCHEMAS, SECTIONS, RootConfig
from rnlvideo.config.targets import DATASET_TARGETS, check_target_nodes

# Sections every config builds from: each must be a ``_target_`` node.
BUILT_SECTIONS = ("model", "data.train", "data.val", "optim", "schedule")
_INTERPOLATION = "${"


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{path}[{index}]")
    else:
        yield path, node


def _contexts(tree: ParserRuleContext) -> Iterator[ParserRuleContext]:
    yield tree
    for child in tree.getChildren():
        if isinstance(child, ParserRuleContext):
            yield from _contexts(child)


def interpolation_problem(value: str) -> str | None:
    """Why ``value`` may not appear in a stored config, or None when it is plain data.

    Allowed: text and references to other keys by a fixed name (``${data.root}/frames``).
    Refused: resolver calls (``${oc.env:HOME}``, whatever builds their name), references whose
    key is itself interpolated (``${a.${b}}``) and text OmegaConf's grammar cannot parse.
    """
    if "$" not in value:
        return None
    try:
        tree = grammar_parser.parse(value)
    except GrammarParseError as err:
        return f"not a valid value ({str(err).splitlines()[0]})"
    for context in _contexts(tree):
        if isinstance(context, OmegaConfGrammarParser.InterpolationResolverContext):
            return "a stored config may only reference other keys (${a.b}), not call resolvers"
        if isinstance(context, OmegaConfGrammarParser.InterpolationNodeContext):
            nested = any(
                isinstance(inner, OmegaConfGrammarParser.InterpolationContext)
                for inner in _contexts(context)
                if inner is not context
            )
            if nested:
                return "builds a key name by interpolation; reference keys by a fixed name"
    return None


def resolver_calls(container: Any) -> list[tuple[str, str]]:
    """``(key, value)`` of every string value that calls an OmegaConf resolver."""
    calls = []
    for key, value in _leaves(container):
        if isinstance(value, str) and "$" in value:
            try:
                tree = grammar_parser.parse(value)
            except GrammarParseError:
                continue
            if any(
                isinstance(c, OmegaConfGrammarParser.InterpolationResolverContext)
                for c in _contexts(tree)
            ):
                calls.append((key, value))
    return calls


def check_stored_values(container: Any) -> None:
    """Refuse any stored string that is more than text and fixed key references."""
    for key, value in _leaves(container):
        if isinstance(value, str):
            problem = interpolation_problem(value)
            if problem:
                raise ConfigError(f"{key}={value!r}: {problem}")


def resolved_container(cfg: DictConfig | Any, prefix: str = "") -> Any:
    """``cfg`` resolved once into plain data; a value still holding ``${`` is refused.

    ``prefix`` is ``cfg``'s key in the whole config, for the messages.
    """
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    except OmegaConfBaseException as err:
        raise _schema_error(err, prefix) from None
    for key, value in _leaves(plain, prefix):
        if isinstance(value, str) and _INTERPOLATION in value:
            raise ConfigError(
                f"{key}={value!r}: holds '${{' after its interpolations were resolved; a "
                "config value may not turn into an interpolation"
            )
    return plain


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


def _select(container: Mapping[str, Any], dotted: str) -> Any:
    node: Any = container
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_built_sections(resolved: Mapping[str, Any]) -> None:
    """Every section a run builds is a ``_target_`` node; the data rules that keep evaluation
    honest hold (label checks on, no substituted validation videos)."""
    for key in BUILT_SECTIONS:
        node = _select(resolved, key)
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"{key}: expected a node with a _target_ builder, got {node!r}")
    data = resolved["data"]
    for split in ("train", "val"):
        node = data[split]
        if node["_target_"] in DATASET_TARGETS and node.get("num_classes") != data["num_classes"]:
            raise ConfigError(
                f"data.{split}.num_classes={node.get('num_classes')!r}: must equal "
                f"data.num_classes={data['num_classes']} (the labels are checked against it)"
            )
    if data["val"].get("on_error") == "resample":
        raise ConfigError(
            "data.val.on_error='resample': validation and test never substitute a video; "
            "use eval.on_error=raise or exclude"
        )


def validate_config(
    cfg: DictConfig | Mapping[str, Any], trust_code: bool = False, stored: bool = False
) -> DictConfig:
    """The config checked and typed by the schema; raises ConfigError naming the key.

    Args:
        cfg: a composed config, or a plain container read from a checkpoint.
        trust_code: allow ``_target_`` names outside rnlvideo's builders (never for input
            from someone else).
        stored: the config comes from a file: its values must be plain data, interpolations
            being references to other keys by a fixed name (:func:`interpolation_problem`).
    """
    container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    if not isinstance(container, Mapping):
        raise ConfigError(f"expected a config mapping, got {type(container).__name__}")
    if stored:
        check_stored_values(container)
    typed = apply_schema(container)
    check_value_rules(typed)
    resolved = resolved_container(typed)
    check_target_nodes(resolved, trust_code=trust_code)
    check_built_sections(resolved)
    return typed
