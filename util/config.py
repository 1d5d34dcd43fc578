"""YAML run configs: strict loading, ``dotted.key=value`` overrides and `resolve` against one defaults file per task.

Each task keeps its defaults in ``<task>/configs/defaults.yaml``; `resolve(cfg, defaults, schema)` fills
them in, refuses unknown keys (naming the nearest valid one) and values of the wrong type. A
section whose default is an empty mapping (``model: {}``) is free-form: the model registry checks
it with `check_options` (the constructor's signature and type annotations give the keys and types).
A default of ``null`` takes its type from the schema; ``null`` is refused where the default is not
null unless the schema says ``nullable: true``.

Ranges and allowed values live next to the defaults, in ``<task>/configs/schema.yaml``
(`load_schema`), one entry for every key of the defaults (`uncovered_keys` lists the missing ones):
``dotted.key: {rule: value}`` with the rules ``gt``, ``ge``, ``lt``, ``le``, ``choices``, ``len``,
``min_len``, ``max_len``, ``unique``, ``ordered`` (a list in increasing order), ``nullable``,
``type`` (``number | integer | string | boolean | list | mapping``, or a list of them), ``items``
(rules for every list item) and ``any_gt`` (a mapping: at least one of its numbers above the value).
Every number must be finite and every integer within ``INT_LIMIT``.

Strict YAML (`load_config`, the override values): a key twice in one mapping is refused naming the
key, both lines and the file; anchors and aliases (``&a`` / ``*a``, the "billion laughs" expansion)
are refused; an integer longer than ``MAX_INT_DIGITS`` digits is refused before it is converted; a
config file is read as a regular file of at most ``MAX_CONFIG_BYTES``.

A checkpoint's stored config goes through the same checks (`stored_config`), and a model whose
options ask for more than ``MAX_MODEL_ELEMENTS`` weights is refused before any memory is taken
(`check_model_size`).
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
import types
import typing
from collections.abc import Mapping as AbcMapping, Sequence as AbcSequence
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from util.atomic import atomic_write_text
from util.errors import EEGKitError

MAX_CONFIG_BYTES = 1 << 20  # a run config or schema file (the kit's are a few kB)
INT_LIMIT = 2**53  # every integer in a config: |n| <= 2**53 (exact as a float; seeds have their own schema bound)
MAX_INT_DIGITS = 30  # a YAML integer literal longer than this is refused before conversion
SEED_MAX = 2**32 - 1  # seeds (config keys and --seed flags): 0 .. 2**32 - 1 (NumPy's legacy seed range)
MODEL_INT_MAX = 65536  # an integer model option whose default is null (int | None), without a rule of its own
MAX_MODEL_ELEMENTS = 2**30  # weights + buffers of one model (4 GiB in fp32), checked on the meta device


# --------------------------------------------------------------------------- strict YAML
class _Refused(Exception):
    """A strict-YAML refusal inside the loader (turned into one `EEGKitError` line naming the source)."""


def _line(node_or_event) -> int:
    mark = getattr(node_or_event, "start_mark", None)
    return mark.line + 1 if mark is not None else 0


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors or aliases, refusing duplicate keys and over-long integers."""

    def compose_node(self, parent, index):  # noqa: D102 (PyYAML hook)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise _Refused(f"YAML anchor/alias {sign}{event.anchor} at line {_line(event)}: anchors and aliases are "
                           f"not allowed in a config (write each value out)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: D102 (PyYAML hook)
        seen: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(f"line {_line(key_node)}: a mapping key must be a name, not a list or mapping")
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _Refused(f"duplicate key {key!r} (line {seen[key]} and line {_line(key_node)}): which value "
                               f"counts? keep one")
            seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):  # noqa: D102 (PyYAML hook)
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Refused(f"line {_line(node)}: a {digits}-digit integer (at most {MAX_INT_DIGITS} digits)")
        return super().construct_yaml_int(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def parse_yaml(text: str | bytes, where: str) -> Any:
    """``text`` parsed by `StrictLoader`; one `EEGKitError` line naming ``where`` on any refusal or syntax error."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as refusal:
        raise EEGKitError(f"{where}: {refusal}") from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise EEGKitError(f"{where}: invalid YAML ({first}{at})") from None
    except (ValueError, TypeError, OverflowError) as error:  # a scalar PyYAML cannot convert (e.g. a bad date)
        raise EEGKitError(f"{where}: invalid YAML value ({error})") from None


def _check_ints(value: Any, where: str, dotted: str = "") -> None:
    """Refuse an integer beyond ``INT_LIMIT`` anywhere in ``value``, naming its dotted key."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        raise EEGKitError(f"{where}: {dotted or 'value'}: integer {value} is out of range (|n| <= 2**53)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_ints(item, where, f"{dotted}.{key}" if dotted else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_ints(item, where, f"{dotted}[{i}]")


def apply_overrides(config: dict, overrides: Iterable[str] = ()) -> dict:
    """Return a copy of ``config`` with ``a.b.c=value`` overrides applied (values parsed as strict YAML)."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise EEGKitError(f"override '{item}': expected key=value, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise EEGKitError(f"override '{item}': an empty name in the key (expected e.g. train.epochs=5)")
        node = config
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise EEGKitError(f"override '{item}': '{part}' is not a section")
            node = node[part]
        node[parts[-1]] = _parse_value(raw, f"override '{item}'")
        _check_ints(node[parts[-1]], f"override '{item}'", key.strip())
    return config


def _parse_value(raw: str, where: str = "override") -> Any:
    """Strict-YAML-parse an override value; '1e-3' (a string in YAML 1.1) becomes a float."""
    value = parse_yaml(raw, where)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Read a YAML config file (strict: see the module docstring) and apply overrides; one-line errors."""
    from util.inputs import read_regular

    path = Path(path)
    data = read_regular(path, MAX_CONFIG_BYTES, what="config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EEGKitError(f"{path}: not UTF-8 text (byte {error.start}); a config is a YAML text file") from None
    config = parse_yaml(text, str(path))
    if not isinstance(config, dict):
        raise EEGKitError(f"{path}: a config must be a YAML mapping")
    _check_ints(config, str(path))
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
        if abs(value) > INT_LIMIT:
            raise EEGKitError(f"config: {dotted} must be an integer within +-2**53, got {value!r}")
        return int(value)
    if isinstance(default, list) and isinstance(value, tuple):  # a stored config's tuples
        value = list(value)
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
        unknown = set(rules) - RULES
        if unknown:
            raise EEGKitError(f"{path}: {key}: unknown rule(s) {', '.join(sorted(map(str, unknown)))} "
                              f"(known: {', '.join(sorted(RULES))})")
    return schema


RULES = {"gt", "ge", "lt", "le", "choices", "len", "min_len", "max_len", "unique", "ordered", "nullable", "type",
         "items", "any_gt"}
_TYPE_TESTS = {
    "number": (lambda v: _is_number(v), "a number"),
    "integer": (lambda v: _is_number(v) and float(v).is_integer(), "an integer"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "boolean": (lambda v: isinstance(v, bool), "a boolean"),
    "list": (lambda v: isinstance(v, (list, tuple)), "a list"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_rules(dotted: str, value: Any, rules: dict) -> None:
    """Refuse ``value`` when it breaks a schema rule (see the module docstring)."""
    if value is None:
        if not rules.get("nullable", False):
            raise EEGKitError(f"config: {dotted} must not be null")
        return
    kinds = rules.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_TYPE_TESTS[kind][0](value) for kind in kinds):
            names = " or ".join(_TYPE_TESTS[kind][1] for kind in kinds)
            raise EEGKitError(f"config: {dotted} must be {names}, got {_short(value)}")
    if _is_number(value) and not math.isfinite(value):
        raise EEGKitError(f"config: {dotted} must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
        raise EEGKitError(f"config: {dotted} is out of range (|n| <= 2**53), got {value!r}")
    if "choices" in rules:
        if isinstance(value, (list, dict)) or value not in rules["choices"]:
            raise EEGKitError(f"config: {dotted} must be one of {', '.join(map(str, rules['choices']))}, "
                              f"got {_short(value)}")
    for rule, test, word in (("gt", lambda a, b: a > b, ">"), ("ge", lambda a, b: a >= b, ">="),
                             ("lt", lambda a, b: a < b, "<"), ("le", lambda a, b: a <= b, "<=")):
        if rule in rules and _is_number(value) and not test(value, rules[rule]):
            raise EEGKitError(f"config: {dotted} must be {word} {rules[rule]}, got {value!r}")
    list_rules = ("len", "items", "min_len", "max_len", "unique", "ordered")
    if isinstance(value, (list, tuple)):
        if "len" in rules and len(value) != int(rules["len"]):
            raise EEGKitError(f"config: {dotted} must be a list of {rules['len']} items, got {_short(value)}")
        if "min_len" in rules and len(value) < int(rules["min_len"]):
            raise EEGKitError(f"config: {dotted} must hold at least {rules['min_len']} item(s), got {_short(value)}")
        if "max_len" in rules and len(value) > int(rules["max_len"]):
            raise EEGKitError(f"config: {dotted} must hold at most {rules['max_len']} items, got {len(value)}")
        for i, item in enumerate(value):
            _check_rules(f"{dotted}[{i}]", item, rules.get("items", {}))
        if rules.get("unique"):
            seen = []
            for item in value:
                if item in seen:
                    raise EEGKitError(f"config: {dotted} lists {item!r} twice")
                seen.append(item)
        if rules.get("ordered") and any(not (a < b) for a, b in zip(value, value[1:])):
            raise EEGKitError(f"config: {dotted} must be in increasing order, got {value!r}")
    elif any(rule in rules for rule in list_rules):
        raise EEGKitError(f"config: {dotted} must be a list, got {_short(value)}")
    if "any_gt" in rules:
        if not isinstance(value, dict):
            raise EEGKitError(f"config: {dotted} must be a mapping, got {_short(value)}")
        numbers = {k: v for k, v in value.items() if _is_number(v)}
        if not any(v > rules["any_gt"] for v in numbers.values()):
            raise EEGKitError(f"config: {dotted}: at least one of {', '.join(f'{dotted}.{k}' for k in numbers)} "
                              f"must be > {rules['any_gt']} (all are {_short(list(numbers.values()))})")


def check_schema(config: dict, schema: dict) -> dict:
    """Check a resolved config against a schema; returns the config."""
    for dotted, rules in schema.items():
        node: Any = config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        _check_rules(dotted, node, rules)
    return config


def leaf_keys(defaults: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every value of ``defaults`` (free-form ``{}`` sections count as one key)."""
    out = []
    for key, value in defaults.items():
        if isinstance(value, dict) and value:
            out.extend(leaf_keys(value, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}")
    return out


def uncovered_keys(defaults: dict, schema: dict, free_form: Iterable[str] = ("model",)) -> tuple[list, list]:
    """(keys of ``defaults`` without a schema entry, schema entries that name no key of ``defaults``).

    ``free_form`` sections (``model:``) are checked by `check_options` and need no entry. Both lists
    must be empty: every value that reaches code has a rule.
    """
    keys = leaf_keys(defaults)
    sections = {k.rsplit(".", 1)[0] for k in keys if "." in k} | set(defaults)
    missing = [k for k in keys if k not in schema and k not in free_form]
    stale = [k for k in schema if k not in keys and k not in sections]
    return missing, stale


# --------------------------------------------------------------------------- free-form model options
def _hint_fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (plain YAML data) fits the type annotation ``hint`` (unknown annotations: yes)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_hint_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, AbcSequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return all(_hint_fits(item, inner[0]) for item in value) if len(inner) == 1 else True
    if origin in (dict, AbcMapping) or hint in (dict,):
        return isinstance(value, dict)
    return True


def _hint_text(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_hint_text(arg) for arg in args)
    if origin in (list, tuple, AbcSequence):
        inner = [a for a in args if a is not Ellipsis]
        return f"a list of {_hint_text(inner[0]).split(' ', 1)[-1]}s" if len(inner) == 1 else "a list"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _type_hints(constructor) -> dict:
    try:
        return typing.get_type_hints(constructor)
    except Exception:  # an annotation that does not evaluate: fall back to the defaults' types
        return {}


def _cap(default: int | float) -> int:
    """The largest value an integer model option (or list item) takes without a rule of its own: 16 x its
    default, at least 64 (``MODEL_INT_MAX`` when the default is null)."""
    return max(16 * int(default), 64)


def _generic_rules(default: Any) -> dict:
    """The rules a model option gets from its default (the model's ``CONFIG_RANGES`` take precedence, key by key).

    An integer: >= 1 when the default is >= 1 (sizes, counts), else >= 0, and at most `_cap` of the default;
    a null default (``int | None``): 1 .. ``MODEL_INT_MAX``; a number: >= 0 when the default is; a list with
    a non-empty default: 1 .. `_cap` (its length) items, each with the rules of the default's items.
    """
    rules: dict = {}
    if default is None:
        return {"ge": 1, "le": MODEL_INT_MAX}  # numbers only (a string or bool option ignores them)
    if _is_number(default):
        if isinstance(default, int) and default >= 1:
            rules.update(ge=1)
        elif default >= 0:
            rules.update(ge=0)
        if isinstance(default, int):
            rules.update(le=_cap(default))
    elif isinstance(default, (list, tuple)) and default:
        rules["min_len"] = 1
        rules["max_len"] = _cap(len(default))
        items = [d for d in default if _is_number(d)]
        if items and len(items) == len(default):
            integers = all(isinstance(d, int) for d in items)
            rules["items"] = {**_generic_rules(min(items)), "type": "integer" if integers else "number"}
            if integers:
                rules["items"]["le"] = _cap(max(items))
    return rules


def check_options(prefix: str, options: dict, constructor, ranges: dict | None = None,
                  skip: Iterable[str] = ("self", "targets")) -> dict:
    """Check a free-form section (``model:``) against a constructor's signature; returns it.

    Unknown keys are refused (nearest key named); a value must fit the parameter's type annotation
    (``int | None``, ``Sequence[int] | int``, ...) and have the type of its default; numbers must be
    finite. Each option then gets the rules of its default (`_generic_rules`: sizes >= 1 and at most
    16 x the default, counts >= 0, non-empty lists), overridden key by key by the model's own rules
    (``ranges``: `schema.yaml`-style rules, e.g. a model class's ``CONFIG_RANGES``).
    """
    params = {name: p for name, p in inspect.signature(constructor).parameters.items()
              if name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    hints = _type_hints(constructor)
    ranges = ranges or {}
    for key, value in options.items():
        dotted = f"{prefix}.{key}"
        if key not in params:
            near = difflib.get_close_matches(str(key), list(params), n=1, cutoff=0.5)
            hint = f" (did you mean {prefix}.{near[0]}?)" if near else f" (known: {', '.join(params)})"
            raise EEGKitError(f"config: unknown key {dotted}{hint}")
        default = params[key].default
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(value, tuple):
            value = list(value)
        if default is not inspect.Parameter.empty and default is not None and value is not None:
            if key not in hints or not _hint_fits(value, hints[key]) or (_is_number(default) and _is_number(value)):
                value = _check_type(dotted, value, default)  # the default's type (whole float -> int, int -> float)
        if key in hints and not _hint_fits(value, hints[key]):
            if isinstance(value, float) and value.is_integer() and _hint_fits(int(value), hints[key]):
                value = int(value)
            else:
                raise EEGKitError(f"config: {dotted} must be {_hint_text(hints[key])}, got {_short(value)}")
        _check_ints(value, "config", dotted)
        rules = _generic_rules(default) if default is not inspect.Parameter.empty else {}
        if isinstance(value, list) and not isinstance(default, list):  # e.g. kernels: Sequence[int] | int
            rules = {"min_len": 1, "max_len": MODEL_INT_MAX, "items": rules}
        rules = {**rules, "nullable": True, **ranges.get(key, {})}  # the model's own rules win, key by key
        _check_finite(dotted, value)
        _check_rules(dotted, value, rules)
        options[key] = value
    return options


def _check_finite(dotted: str, value: Any) -> None:
    if _is_number(value) and not math.isfinite(value):
        raise EEGKitError(f"config: {dotted} must be a finite number, got {value!r}")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(f"{dotted}[{i}]", item)


def check_model_size(prefix: str, factory: Callable[[], Any], options: dict, defaults_of: Callable | None = None,
                     limit: int = MAX_MODEL_ELEMENTS) -> None:
    """Refuse a model whose weights and buffers exceed ``limit`` elements, before any memory is taken.

    ``factory()`` is built on PyTorch's ``meta`` device (shapes only, no storage). Options at or below
    the constructor's defaults (the published sizes) need no probe: sizes only grow with their options,
    so the probe runs only when some integer option (or list item) is above its default.
    """
    import torch

    if defaults_of is not None and not _above_defaults(options, defaults_of):
        return
    try:
        with torch.device("meta"):
            model = factory()
    except (TypeError, ValueError, AssertionError, RuntimeError):
        return  # the real build reports the bad option
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    n += int(getattr(model, "extra_elements", 0))  # statistics kept outside parameters/buffers (ridge)
    if n > limit:
        grown = [f"{prefix}.{k}={_short(v, 30)}" for k, v in options.items()
                 if _default(defaults_of, k) is not None and _grows(v, _default(defaults_of, k))] or \
            [f"{prefix}.{k}={_short(v, 30)}" for k, v in options.items() if _grows(v, _default(defaults_of, k))]
        raise EEGKitError(f"config: {prefix}: {n:.3g} weights ({', '.join(grown) or 'these options'}) exceed the "
                          f"limit of {limit:.3g} ({limit * 4 / 2**30:g} GiB in fp32); use smaller sizes")


def _default(defaults_of: Callable | None, key: str) -> Any:
    if defaults_of is None:
        return None
    parameter = inspect.signature(defaults_of).parameters.get(key)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _grows(value: Any, default: Any) -> bool:
    """True when an integer (or an integer list item) of ``value`` is above the default (its largest item)."""
    numbers = [v for v in (value if isinstance(value, (list, tuple)) else [value])
               if isinstance(v, int) and not isinstance(v, bool)]
    if not numbers:
        return False
    if default is None:
        return True
    base = [d for d in (default if isinstance(default, (list, tuple)) else [default]) if _is_number(d)]
    return not base or max(numbers) > max(base) or (isinstance(value, (list, tuple)) and isinstance(
        default, (list, tuple)) and len(value) > len(default))


def _above_defaults(options: dict, constructor) -> bool:
    return any(_grows(value, _default(constructor, key)) for key, value in options.items())


# --------------------------------------------------------------------------- flags
def int_arg(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole-number flag in ``low .. high``, checked while parsing: a bad value is
    one line naming the flag (``argument --seed: must be a whole number in 0 .. 4294967295, got '-1'``)."""
    import argparse

    def parse(text: str) -> int:
        raw = str(text).strip()
        try:
            value = int(raw) if len(raw) <= MAX_INT_DIGITS else None
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number in {low} .. {high}, got {_short(text, 40)}")
        return value

    parse.__name__ = "whole number"
    return parse


def float_arg(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number flag in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            left = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be a finite number in {left}{low:g}, {high:g}], "
                                             f"got {_short(text, 40)}")
        return value

    parse.__name__ = "number"
    return parse


seed_arg = int_arg(0, SEED_MAX)  # the type of every --seed flag (tests/hostile/test_config_round2.py checks)


# --------------------------------------------------------------------------- resolving
def resolve(config: dict, defaults: dict, schema: dict | None = None, _prefix: str = "") -> dict:
    """``defaults`` updated with ``config`` (a copy); unknown keys, wrongly typed values and values
    outside the ``schema`` (see `load_schema`) are refused."""
    out = _resolve(config, defaults, _prefix)
    _refuse_nulls(out, defaults, schema or {}, _prefix)
    return check_schema(out, schema) if schema else out


def stored_config(path: str | Path, config: Any, check: Callable[[dict], dict]) -> dict:
    """A checkpoint's stored config through the task's own checks (``check``: resolve + cross-key rules).

    Keys a newer kit added are filled from the defaults; anything the schema refuses is one line naming
    the checkpoint file and the key.
    """
    if not isinstance(config, dict):
        raise EEGKitError(f"{path}: the stored config is not a mapping (a damaged or edited checkpoint)")
    try:
        return check(_lists(copy.deepcopy(config)))
    except EEGKitError as error:
        raise EEGKitError(f"{path}: its stored config is not valid ({error}); a damaged or edited "
                          f"checkpoint, or one from another tool") from None


def _lists(value: Any) -> Any:
    """Tuples (as a ``weights_only`` checkpoint returns them) as lists, recursively."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


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
        raise EEGKitError(f"config: {_prefix.rstrip('.') or 'the config'} must be a mapping, got {_short(config)}")
    out = copy.deepcopy(defaults)
    for key, value in config.items():
        dotted = f"{_prefix}{key}"
        if not isinstance(key, str) or key not in defaults:
            near = difflib.get_close_matches(str(key), [str(k) for k in defaults], n=1, cutoff=0.5)
            hint = f" (did you mean {_prefix}{near[0]}?)" if near else f" (known: {', '.join(map(str, defaults))})"
            raise EEGKitError(f"config: unknown key {dotted}{hint}")
        default = defaults[key]
        if isinstance(default, dict) and default:
            out[key] = _resolve(value if value is not None else {}, default, dotted + ".")
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise EEGKitError(f"config: {dotted} must be a mapping, got {_short(value)}")
            _check_ints(value, "config", dotted)
            out[key] = copy.deepcopy(value)
        else:
            _check_ints(value, "config", dotted)
            out[key] = _check_type(dotted, copy.deepcopy(value), default)
    return out
