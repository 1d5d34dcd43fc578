"""Crafted checkpoints: pickles that would create a marker file if a tool loaded them unsafely.

`write_all(folder) -> {name: (checkpoint path, marker path)}`. Every payload is built with
``__reduce__`` (the way an attacker builds one); none is ever loaded here. The names say which
call the pickle asks for and which container carries it.
"""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from pathlib import Path


class _Reduce:
    """An object whose pickle is ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict:
    m = str(marker)
    return {
        "os_system": _Reduce(os.system, (f"touch {m}",)),
        "builtins_open": _Reduce(builtins.open, (m, "w")),
        "builtins_exec": _Reduce(builtins.exec, (f"open({m!r}, 'w').close()",)),
        "builtins_eval": _Reduce(builtins.eval, (f"open({m!r}, 'w').close()",)),
        "subprocess_popen": _Reduce(subprocess.Popen, (["touch", m],)),
    }


def _kit_like(evil) -> dict:
    """A state that looks like a kit checkpoint, with the payload hidden among the weights."""
    import torch

    return {"eegkit_checkpoint": 2, "task": "task2", "model_type": "linear",
            "config": {"model": {"type": "linear"}}, "model": {"weight": torch.zeros(1), "bias": evil},
            "optimizer": None, "scheduler": None, "extra": {}}


def write_all(folder: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    import torch

    folder = Path(folder)
    out: dict[str, tuple[Path, Path]] = {}
    for name in _payloads(Path("x")):
        # torch's zip container, payload at the top
        marker = folder / f"marker_{name}_zip"
        path = folder / f"{name}_zip.pt"
        torch.save({"config": {}, "model": _payloads(marker)[name]}, path)
        out[f"{name}_zip"] = (path, marker)
    for name in ("os_system", "builtins_open"):
        marker = folder / f"marker_{name}_raw"
        path = folder / f"{name}_raw.pt"
        with open(path, "wb") as handle:  # a bare pickle (protocol 2), no torch container
            pickle.dump({"config": {}, "model": _payloads(marker)[name]}, handle, protocol=2)
        out[f"{name}_raw"] = (path, marker)
        marker = folder / f"marker_{name}_legacy"
        path = folder / f"{name}_legacy.pt"
        torch.save({"model": _payloads(marker)[name]}, path, _use_new_zipfile_serialization=False)
        out[f"{name}_legacy"] = (path, marker)
    marker = folder / "marker_hidden_in_weights"
    path = folder / "hidden_in_weights.pt"
    torch.save(_kit_like(_payloads(marker)["os_system"]), path)
    out["hidden_in_weights"] = (path, marker)
    return out
