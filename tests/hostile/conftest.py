"""The hostile-input harness: every case runs a CLI the way a careless user or an attacker would.

`refuse(main, argv, names=..., watch=...)` runs ``main`` through `util.errors.run_cli` in-process
and asserts the four promises of docs/errors.md ("Errors and safe writes"):

1. exit status 2;
2. no ``Traceback`` in stdout or stderr;
3. the ``error:`` line is one line and names the offending file or flag (one of ``names``);
4. nothing under the watched paths (``--out``, inputs) was created, changed or deleted,
   compared by listing and SHA-256 before and after.

Cases that must run as a real process (a crafted checkpoint payload, SIGKILL) use
`refuse_subprocess`, which makes the same four checks on ``python -m module``.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]


def tree_state(*roots: str | os.PathLike) -> dict[str, str | None]:
    """``{path: sha256 | 'dir' | None}`` of every file and folder under each root (None: root absent)."""
    state: dict[str, str | None] = {}
    for root in map(Path, roots):
        if not root.exists():
            state[str(root)] = None
            continue
        if root.is_file():
            state[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        state[str(root)] = "dir"
        for path in sorted(root.rglob("*")):
            state[str(path)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _check(code: int, text: str, names: Sequence[str], before: dict, watch: Sequence) -> str:
    assert code == 2, f"exit status {code}, expected 2; output:\n{text}"
    assert "Traceback" not in text, f"traceback in output:\n{text}"
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one 'error:' line, got:\n{text}"
    line = errors[0]
    assert any(str(name) in line for name in names), f"message names none of {list(names)}: {line}"
    after = tree_state(*watch)
    assert after == before, f"files changed under {list(map(str, watch))}: " + str(
        sorted(set(after.items()) ^ set(before.items())))
    return line


@pytest.fixture
def refuse(capsys) -> Callable[..., str]:
    """``refuse(main, argv, names=[...], watch=[...]) -> the error line``; see the module docstring."""
    from util.errors import run_cli

    def check(main: Callable, argv: Sequence[str], names: Iterable[str], watch: Iterable = ()) -> str:
        watch, names = list(watch), [str(n) for n in names]
        capsys.readouterr()
        before = tree_state(*watch)
        with pytest.raises(SystemExit) as info:
            run_cli(main, [str(a) for a in argv])
        captured = capsys.readouterr()
        return _check(info.value.code, captured.out + captured.err, names, before, watch)

    return check


@pytest.fixture
def refuse_subprocess() -> Callable[..., str]:
    """``refuse_subprocess('task2_regression.predict', argv, names=[...], watch=[...], cwd=None)``."""

    def check(module: str, argv: Sequence[str], names: Iterable[str], watch: Iterable = (),
              cwd: str | os.PathLike | None = None, timeout: float = 300) -> str:
        watch, names = list(watch), [str(n) for n in names]
        before = tree_state(*watch)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        result = subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True,
                                cwd=cwd or REPO, env=env, timeout=timeout)
        return _check(result.returncode, result.stdout + result.stderr, names, before, watch)

    return check


# --------------------------------------------------------------------------- shared runs (part A: test_runs_*.py)
TASK2_TINY = {
    "target": "mel",
    "model": {"type": "linear", "n_taps": 8},
    "data": {"window_s": 5.0, "hop_s": 5.0, "batch_size": 8, "val_window_s": 5.0},
    "train": {"epochs": 1, "lr": 5.0e-3, "patience": 0, "seed": 0, "max_steps_per_epoch": 2},
}


@pytest.fixture(scope="session")
def task2_tiny_config(tmp_path_factory) -> Path:
    """A tiny Task 2 linear config file (1 epoch of 2 steps)."""
    import yaml

    path = tmp_path_factory.mktemp("hostile_cfg") / "tiny_linear.yaml"
    path.write_text(yaml.safe_dump(TASK2_TINY))
    return path


@pytest.fixture(scope="session")
def task2_tiny_run(task2_dataset, tmp_path_factory) -> Path:
    """A trained tiny Task 2 run folder (read only: copy it before changing anything)."""
    from task2_regression.train import train

    run = tmp_path_factory.mktemp("hostile_task2_run") / "run"
    train(TASK2_TINY, task2_dataset, run, say=lambda message: None)
    return run


@pytest.fixture(scope="session")
def se_tiny_config(tmp_path_factory) -> Path:
    import yaml

    from tests.conftest import TINY_SE_CONFIG

    path = tmp_path_factory.mktemp("hostile_se_cfg") / "tiny_se.yaml"
    path.write_text(yaml.safe_dump(TINY_SE_CONFIG))
    return path


@pytest.fixture(scope="session")
def crafted_checkpoints(tmp_path_factory) -> dict:
    """Crafted .pt files whose pickle would create ``marker`` when loaded unsafely: {name: (path, marker)}."""
    from tests.hostile import payloads

    folder = tmp_path_factory.mktemp("crafted")
    return payloads.write_all(folder)
