"""Importing model files written by other code (the published models' own training scripts) into kit models.

Two steps, shared by every importer (`task2_regression.import_checkpoint`, `speaker_extraction.import_checkpoint`):

- `read_state_dict(path) -> {key: tensor}`: ``torch.load(weights_only=True)``; accepts the authors'
  training layout ``{'epoch', 'state_dict', 'optimizer', ...}`` (only ``state_dict`` is read), a bare
  state dict (what an averaging script writes) and either one with every key prefixed ``module.``
  (saved from ``nn.DataParallel`` / DDP; the prefix is removed). Anything else (missing, truncated or
  crafted file, a kit checkpoint, a dict that is not string keys to tensors) is one `EEGKitError` line
  naming the file.
- `load_mapped(model, state, mapping_fn=None, source=path) -> unused keys`: maps every source key
  (``mapping_fn(key) -> model key``; identity when None), refuses the first unexpected, missing or
  wrongly shaped key (one line naming it and its shape(s)), a non-floating or non-finite tensor, and two
  source keys landing on one model key; then loads everything (strict) and returns the model's keys that
  its forward never reads (`unused_keys`).

A model declares the parameters its forward never uses with an attribute ``UNUSED_PARAMETERS`` (class or instance):
``{regex (re.fullmatch on state-dict keys): short description}``. `unused_report(model)` makes the
one-line summary the importers print.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping

import torch

from util.errors import EEGKitError

DATA_PARALLEL_PREFIX = "module."
TRAINING_LAYOUT_KEY = "state_dict"  # {'epoch', 'state_dict', 'optimizer', 'learning_rate'} of the authors' train.py


def shape_text(tensor_or_shape) -> str:
    """``(64, 128, 1)``, ``(64,)`` or ``()`` for a tensor or a shape (Python's tuple notation)."""
    shape = tensor_or_shape.shape if torch.is_tensor(tensor_or_shape) else tensor_or_shape
    return str(tuple(int(n) for n in shape))


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1-MiB blocks (the importers record their source's)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path):
    from util.training import read_torch_file  # the kit's one weights_only load and its wording

    return read_torch_file(path, "cpu", expected="a model file written by torch.save")


def _check_tensors(state: Mapping, path: Path, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        kind = "an empty dict" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise EEGKitError(f"{path}: {where} is {kind}, expected a state dict {{name: tensor}}")
    for key, value in state.items():
        if not isinstance(key, str):
            raise EEGKitError(f"{path}: {where} has the non-string key {key!r}; not a state dict")
        if not torch.is_tensor(value):
            raise EEGKitError(f"{path}: {where} entry {key!r} holds {type(value).__name__!r}, not a tensor; "
                              f"not a state dict (expected the training layout {{'epoch', 'state_dict', ...}} "
                              f"or a bare state dict)")
    return dict(state)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a model file of another code base, as ``{key: tensor}`` (see the module docstring)."""
    path = Path(path)
    state = _load(path)
    if isinstance(state, Mapping) and "eegkit_checkpoint" in state:
        raise EEGKitError(f"{path}: is already an eegkit checkpoint (model {state.get('model_type')!r}); "
                          f"use its run folder directly, there is nothing to import")
    where = "the file"
    if isinstance(state, Mapping) and TRAINING_LAYOUT_KEY in state and not torch.is_tensor(state[TRAINING_LAYOUT_KEY]):
        state, where = state[TRAINING_LAYOUT_KEY], f"its {TRAINING_LAYOUT_KEY!r} entry"
    state = _check_tensors(state, path, where)
    prefixed = [key.startswith(DATA_PARALLEL_PREFIX) for key in state]
    if all(prefixed):
        state = {key[len(DATA_PARALLEL_PREFIX):]: value for key, value in state.items()}
    elif any(prefixed):
        first = next(key for key in state if key.startswith(DATA_PARALLEL_PREFIX))
        raise EEGKitError(f"{path}: some keys carry the DataParallel prefix {DATA_PARALLEL_PREFIX!r} "
                          f"(e.g. {first!r}) and others do not; not one model's state dict")
    return state


def unused_keys(model: torch.nn.Module) -> list[str]:
    """The model's state-dict keys its forward never reads (its ``UNUSED_PARAMETERS`` patterns), in key order."""
    patterns = [re.compile(p) for p in getattr(model, "UNUSED_PARAMETERS", {})]
    return [key for key in model.state_dict() if any(p.fullmatch(key) for p in patterns)]


def unused_report(model: torch.nn.Module) -> str:
    """One line: how many parameters the forward never uses, grouped by the model's descriptions."""
    declared = getattr(model, "UNUSED_PARAMETERS", {})
    state = model.state_dict()
    groups = []
    total_keys = total = 0
    for pattern, description in declared.items():
        keys = [key for key in state if re.fullmatch(pattern, key)]
        count = sum(state[key].numel() for key in keys)
        total_keys, total = total_keys + len(keys), total + count
        if keys:
            groups.append(f"{description} ({count:,})")
    if not total_keys:
        return "unused parameters: none (the forward reads every parameter)"
    return (f"unused parameters (loaded and kept, never read by the forward): {total:,} in {total_keys} tensors: "
            + "; ".join(groups))


def load_mapped(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                mapping_fn: Callable[[str], str] | None = None, source: str | Path = "checkpoint") -> list[str]:
    """Load ``state`` into ``model`` key by key through ``mapping_fn``; refuse any mismatch in one line.

    Returns `unused_keys(model)`. Nothing is loaded unless every key maps, fits and is finite.
    """
    expected = model.state_dict()  # {model key: tensor}, in model order
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in state.items():
        target = key if mapping_fn is None else mapping_fn(key)
        if target in origin:
            raise EEGKitError(f"{source}: keys {origin[target]!r} and {key!r} both map to {target!r}")
        if target not in expected:
            targets = {s if mapping_fn is None else mapping_fn(s) for s in state}
            missing = [k for k in expected if k not in targets]
            hint = (f"; {len(missing)} model key(s) missing, first {missing[0]!r} {shape_text(expected[missing[0]])}"
                    if missing else "")
            named = repr(key) if target == key else f"{key!r} (as {target!r})"
            raise EEGKitError(f"{source}: unexpected key {named} {shape_text(tensor)}: not a parameter of "
                              f"{type(model).__name__}{hint}")
        want = expected[target]
        if tuple(tensor.shape) != tuple(want.shape):
            mapped_to = "" if target == key else f" for {target!r}"
            raise EEGKitError(f"{source}: key {key!r} has shape {shape_text(tensor)}, {type(model).__name__} "
                              f"expects {shape_text(want)}{mapped_to}")
        if want.is_floating_point() and not tensor.is_floating_point():
            raise EEGKitError(f"{source}: key {key!r} holds {tensor.dtype} values, expected floating point")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EEGKitError(f"{source}: key {key!r} {shape_text(tensor)} holds NaN/Inf")
        mapped[target], origin[target] = tensor, key
    missing = [key for key in expected if key not in mapped]
    if missing:
        raise EEGKitError(f"{source}: missing key {missing[0]!r} (the model expects {shape_text(expected[missing[0]])})"
                          + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    with torch.no_grad():
        model.load_state_dict(mapped, strict=True)
    return unused_keys(model)


__all__ = ["read_state_dict", "load_mapped", "unused_keys", "unused_report", "shape_text"]
