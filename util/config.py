"""YAML run configs with ``dotted.key=value`` command-line overrides."""
from __future__ import annotations

import copy
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
