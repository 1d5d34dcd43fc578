"""YAML run configs: ``dotted.key=value`` overrides and `resolve` against one defaults file per task.

Each task keeps its defaults in ``<task>/configs/defaults.yaml``; `resolve(cfg, defaults)` fills
them in, refuses unknown keys (naming the nearest valid one) and values of the wrong type. A
section whose default is an empty mapping (``model: {}``) is free-form (the model checks it);
a default of ``null`` accepts any value.
"""
from __future__ import annotations

import copy
import difflib
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
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    kind, name = next(((k, n) for k, n in _KINDS if type(default) is k), (type(default), type(default).__name__))
    if type(value) is not kind:
        raise EEGKitError(f"config: {dotted} must be {name}, got {value!r}")
    return value


def resolve(config: dict, defaults: dict, _prefix: str = "") -> dict:
    """``defaults`` updated with ``config`` (a copy); unknown keys and wrongly typed values are refused."""
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
            out[key] = resolve(value if value is not None else {}, default, dotted + ".")
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise EEGKitError(f"config: {dotted} must be a mapping, got {value!r}")
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _check_type(dotted, copy.deepcopy(value), default)
    return out
