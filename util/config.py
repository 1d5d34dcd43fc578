"""YAML run configs: ``dotted.key=value`` overrides and `resolve` against one defaults file per task.

Each task keeps its defaults in ``<task>/configs/defaults.yaml``; `resolve(cfg, defaults, schema)` fills
them in, refuses unknown keys (naming the nearest valid one) and values of the wrong type. A
section whose default is an empty mapping (``model: {}``) is free-form: the model registry checks
it with `check_options` (the constructor's signature gives the keys and types). A default of
``null`` accepts any type; ``null`` is refused where the default is not null unless the schema says
``nullable: true``.

Ranges and allowed values live next to the defaults, in ``<task>/configs/schema.yaml``
(`load_schema`): ``dotted.key: {rule: value}`` with the rules ``gt``, ``ge``, ``lt``, ``le``,
``choices``, ``len``, ``ordered`` (a list in increasing order), ``nullable`` and ``items`` (rules for
every list item, plus ``type: number | integer | string``). Every number must be finite.
"""
from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any, Iterable

import yaml

from util.atomic import atomic_write_text
from util.errors import EEGKitError


def apply_overrides(config: dict, overrides: Iterable[str] = ()) -> dict:
    """Return a copy of ``config`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise EEGKitError(f"override '{item}': expected key=value, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = config
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise EEGKitError(f"override '{item}': '{part}' is not a section")
            node = node[part]
        node[parts[-1]] = _parse_value(raw)
    return config


def _parse_value(raw: str) -> Any:
    """YAML-parse an override value; '1e-3' (a string in YAML 1.1) becomes a float."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Read a YAML config file and apply overrides; clear one-line errors on bad files."""
    path = Path(path)
    if not path.is_file():
        raise EEGKitError(f"{path}: config file not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise EEGKitError(f"{path}: invalid YAML ({first})") from None
    if not isinstance(config, dict):
        raise EEGKitError(f"{path}: a config must be a YAML mapping")
    return apply_overrides(config, overrides)


def save_config(config: dict, path: str | Path) -> Path:
    return atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))


def get(config: dict, dotted: str, default: Any = None) -> Any:
    """``get(cfg, 'train.lr', 1e-3)``: nested lookup with a default."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def load_defaults(path: str | Path) -> dict:
    """A task's defaults file (``<task>/configs/defaults.yaml``)."""
    return load_config(path)


_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"))


def _check_type(dotted: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` (int -> float, whole float -> int); EEGKitError otherwise."""
    if default is None or value is None:
        return value
    if isinstance(value, dict) and not isinstance(default, dict):
        raise EEGKitError(f"config: {dotted} must be a single value, got a mapping {value!r}")
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    kind, name = next(((k, n) for k, n in _KINDS if type(default) is k), (type(default), type(default).__name__))
    if type(value) is not kind:
        raise EEGKitError(f"config: {dotted} must be {name}, got {value!r}")
    return value


def load_schema(path: str | Path) -> dict:
    """A task's ``configs/schema.yaml``: ``{dotted.key: {rule: value}}``."""
    schema = load_config(path)
    for key, rules in schema.items():
        if not isinstance(rules, dict):
            raise EEGKitError(f"{path}: {key}: rules must be a mapping")
    return schema


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_rules(dotted: str, value: Any, rules: dict) -> None:
    """Refuse ``value`` when it breaks a schema rule (see the module docstring)."""
    if value is None:
        if not rules.get("nullable", False):
            raise EEGKitError(f"config: {dotted} must not be null")
        return
    kind = rules.get("type")
    if kind == "number" and not _is_number(value):
        raise EEGKitError(f"config: {dotted} must be a number, got {value!r}")
    if kind == "integer" and not (_is_number(value) and float(value).is_integer()):
        raise EEGKitError(f"config: {dotted} must be an integer, got {value!r}")
    if kind == "string" and not isinstance(value, str):
        raise EEGKitError(f"config: {dotted} must be a string, got {value!r}")
    if _is_number(value) and not math.isfinite(value):
        raise EEGKitError(f"config: {dotted} must be a finite number, got {value!r}")
    if "choices" in rules and value not in rules["choices"]:
        raise EEGKitError(f"config: {dotted} must be one of {', '.join(map(str, rules['choices']))}, got {value!r}")
    for rule, test, word in (("gt", lambda a, b: a > b, ">"), ("ge", lambda a, b: a >= b, ">="),
                             ("lt", lambda a, b: a < b, "<"), ("le", lambda a, b: a <= b, "<=")):
        if rule in rules and _is_number(value) and not test(value, rules[rule]):
            raise EEGKitError(f"config: {dotted} must be {word} {rules[rule]}, got {value!r}")
    if isinstance(value, (list, tuple)):
        if "len" in rules and len(value) != int(rules["len"]):
            raise EEGKitError(f"config: {dotted} must be a list of {rules['len']} items, got {value!r}")
        for i, item in enumerate(value):
            _check_rules(f"{dotted}[{i}]", item, rules.get("items", {}))
        if rules.get("ordered") and any(not (a < b) for a, b in zip(value, value[1:])):
            raise EEGKitError(f"config: {dotted} must be in increasing order, got {value!r}")
    elif "len" in rules or "items" in rules:
        raise EEGKitError(f"config: {dotted} must be a list, got {value!r}")


def check_schema(config: dict, schema: dict) -> dict:
    """Check a resolved config against a schema; returns the config."""
    for dotted, rules in schema.items():
        node: Any = config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        _check_rules(dotted, node, rules)
    return config


def check_options(prefix: str, options: dict, constructor, ranges: dict | None = None,
                  skip: Iterable[str] = ("self", "targets")) -> dict:
    """Check a free-form section (``model:``) against a constructor's signature; returns it.

    Unknown keys are refused (nearest key named); a value must have the type of the parameter's
    default (None: any); numbers must be finite; integers whose default is >= 1 must be >= 1 (sizes,
    counts) and numbers whose default is >= 0 must be >= 0, unless ``ranges`` (`schema.yaml`-style
    rules, e.g. a model class's ``CONFIG_RANGES``) gives the key's own rules.
    """
    import inspect

    params = {name: p for name, p in inspect.signature(constructor).parameters.items()
              if name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for key, value in options.items():
        dotted = f"{prefix}.{key}"
        if key not in params:
            near = difflib.get_close_matches(str(key), list(params), n=1, cutoff=0.5)
            hint = f" (did you mean {prefix}.{near[0]}?)" if near else f" (known: {', '.join(params)})"
            raise EEGKitError(f"config: unknown key {dotted}{hint}")
        default = params[key].default
        if default is inspect.Parameter.empty or default is None:
            if _is_number(value) and not math.isfinite(value):
                raise EEGKitError(f"config: {dotted} must be a finite number, got {value!r}")
            continue
        if isinstance(default, tuple):
            default = list(default)
        value = _check_type(dotted, value, default)
        if _is_number(value) and key not in (ranges or {}):
            if not math.isfinite(value):
                raise EEGKitError(f"config: {dotted} must be a finite number, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and default >= 1 and value < 1:
                raise EEGKitError(f"config: {dotted} must be >= 1, got {value!r}")
            if _is_number(default) and default >= 0 and value < 0:
                raise EEGKitError(f"config: {dotted} must be >= 0, got {value!r}")
        options[key] = value
    for dotted, rules in (ranges or {}).items():
        if dotted in options:
            _check_rules(f"{prefix}.{dotted}", options[dotted], rules)
    return options


def resolve(config: dict, defaults: dict, schema: dict | None = None, _prefix: str = "") -> dict:
    """``defaults`` updated with ``config`` (a copy); unknown keys, wrongly typed values and values
    outside the ``schema`` (see `load_schema`) are refused."""
    out = _resolve(config, defaults, _prefix)
    _refuse_nulls(out, defaults, schema or {}, _prefix)
    return check_schema(out, schema) if schema else out


def _refuse_nulls(config: dict, defaults: dict, schema: dict, prefix: str) -> None:
    """``null`` only where the default is null or the schema allows it."""
    for key, default in defaults.items():
        dotted, value = f"{prefix}{key}", config.get(key)
        if isinstance(default, dict) and default and isinstance(value, dict):
            _refuse_nulls(value, default, schema, dotted + ".")
        elif value is None and default is not None and not schema.get(dotted, {}).get("nullable", False):
            raise EEGKitError(f"config: {dotted} must not be null (default {default!r})")


def _resolve(config: dict, defaults: dict, _prefix: str = "") -> dict:
    if not isinstance(config, dict):
        raise EEGKitError(f"config: {_prefix.rstrip('.') or 'the config'} must be a mapping, got {config!r}")
    out = copy.deepcopy(defaults)
    for key, value in config.items():
        dotted = f"{_prefix}{key}"
        if key not in defaults:
            near = difflib.get_close_matches(str(key), [str(k) for k in defaults], n=1, cutoff=0.5)
            hint = f" (did you mean {_prefix}{near[0]}?)" if near else f" (known: {', '.join(map(str, defaults))})"
            raise EEGKitError(f"config: unknown key {dotted}{hint}")
        default = defaults[key]
        if isinstance(default, dict) and default:
            out[key] = _resolve(value if value is not None else {}, default, dotted + ".")
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise EEGKitError(f"config: {dotted} must be a mapping, got {value!r}")
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _check_type(dotted, copy.deepcopy(value), default)
    return out
