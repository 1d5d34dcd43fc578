"""Round 2 (issue 20): the environment and the way a script is started.

- torchrun's variables (`util.distributed.launch_env`): none set is one process; once any of RANK,
  WORLD_SIZE, LOCAL_RANK is set, all three must be consistent, and WORLD_SIZE > 1 needs MASTER_ADDR and
  MASTER_PORT. ``WORLD_SIZE=2`` without torchrun and a stale ``RANK=1`` are one line each (a lone
  process would otherwise wait forever, or silently skip rank 0's writes).
- Boolean variables (`util.errors.env_flag`): ``EEGKIT_DEBUG=false`` is false; ``maybe`` is refused.
- Scripts by path: ``python task2_regression/train.py`` works like ``python -m task2_regression.train``
  (every script starts with the same two-line bootstrap that puts the repository root on sys.path).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.hostile.conftest import REPO

TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in TORCHRUN + ("EEGKIT_DEBUG",):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- torchrun's environment
ENV_CASES = [  # (variables, words the line names)
    ({"WORLD_SIZE": "2"}, "RANK"),  # WORLD_SIZE=2 without torchrun
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, "MASTER_ADDR"),
    ({"RANK": "1"}, "RANK"),  # a stale RANK=1: would skip rank 0's writes
    ({"RANK": "1", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, "RANK"),
    ({"RANK": "abc", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, "RANK"),
    ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0"}, "WORLD_SIZE"),
    ({"LOCAL_RANK": "3"}, "LOCAL_RANK"),
]


@pytest.mark.parametrize("task", ["task2", "se"])
@pytest.mark.parametrize("env,words", ENV_CASES, ids=[" ".join(f"{k}={v}" for k, v in e.items()) for e, _ in ENV_CASES])
def test_train_refuses_an_inconsistent_launch_environment(refuse, clean_env, task2_dataset, kul_dataset, tiny_se_run,
                                                          task2_tiny_config, se_tiny_config, tmp_path, task, env,
                                                          words):
    if task == "task2":
        from task2_regression.train import main
        data, config = task2_dataset, task2_tiny_config
    else:
        from speaker_extraction.train import main
        data, config = kul_dataset, se_tiny_config
    for name, value in env.items():
        clean_env.setenv(name, value)
    out = tmp_path / "run"
    line = refuse(main, ["--config", config, "--data", data, "--out", out, "--no-progress"] if task == "se" else
                  ["--config", config, "--data", data, "--out", out], names=[words], watch=[out, data])
    assert "torchrun" in line


def test_launch_env_rule():
    from util.distributed import launch_env
    from util.errors import EEGKitError

    assert launch_env({}) == (0, 1, 0)
    assert launch_env({"RANK": "", "WORLD_SIZE": " "}) == (0, 1, 0)  # empty counts as unset
    assert launch_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == (0, 1, 0)
    assert launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"}) == (1, 2, 1)
    for env, _ in ENV_CASES:
        with pytest.raises(EEGKitError, match="torchrun"):
            launch_env(env)


# --------------------------------------------------------------------------- boolean variables
def _failing(argv):
    from util.errors import EEGKitError

    raise EEGKitError("--thing: bad")


@pytest.mark.parametrize("value,traceback", [("false", False), ("0", False), ("no", False), ("off", False),
                                             ("", False), ("FALSE", False), ("true", True), ("1", True),
                                             ("Yes", True), ("on", True)])
def test_eegkit_debug_is_parsed_as_a_boolean(capsys, clean_env, value, traceback):
    from util.errors import run_cli

    clean_env.setenv("EEGKIT_DEBUG", value)
    with pytest.raises(SystemExit) as done:
        run_cli(_failing, [])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "error: --thing: bad" in err
    assert ("Traceback" in err) is traceback


@pytest.mark.parametrize("value", ["maybe", "2", "false-ish"])
def test_eegkit_debug_that_is_no_boolean_is_one_line(refuse, clean_env, tmp_path, value):
    clean_env.setenv("EEGKIT_DEBUG", value)
    line = refuse(_failing, [], names=["EEGKIT_DEBUG"], watch=[tmp_path])
    assert value in line


# --------------------------------------------------------------------------- scripts by path
def _scripts() -> list[str]:
    """Every module under a package folder that runs as a script (``__main__`` guard or ``__main__.py``)."""
    out = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if len(rel.parts) < 2 or rel.parts[0] in ("tests",) or rel.parts[0].startswith("."):
            continue
        text = path.read_text()
        if path.name == "__main__.py" or '__name__ == "__main__"' in text:
            out.append(str(rel))
    return out


def test_every_script_has_the_by_path_bootstrap():
    """The same two lines in every script, right after the docstring and ``from __future__``, with the depth of
    its folder: run by path, the repository root replaces the script's folder on sys.path."""
    missing = []
    for rel in _scripts():
        tree = ast.parse((REPO / rel).read_text())
        guards = [node for node in tree.body if isinstance(node, ast.If) and "__package__" in ast.unparse(node.test)]
        depth = len(rel.split("/")) - 1
        if not guards or f"parents[{depth}]" not in ast.unparse(guards[0]):
            missing.append(rel)
        elif any(isinstance(node, (ast.Import, ast.ImportFrom)) and node.module != "__future__"
                 for node in tree.body[: tree.body.index(guards[0])] if isinstance(node, (ast.Import, ast.ImportFrom))):
            missing.append(f"{rel} (an import before the bootstrap)")
    assert _scripts() and missing == []


def _by_path(rel: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) + TORCHRUN}
    return subprocess.run([sys.executable, str(REPO / rel) if cwd != REPO else rel, *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("rel", ["task2_regression/train.py", "speaker_extraction/predict.py",
                                 "task2_regression/experiments/paper_tables.py", "evaluation/task2.py"])
def test_scripts_run_by_path_from_the_repository_root(rel):
    done = _by_path(rel, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Traceback" not in done.stderr


def test_a_script_run_by_path_from_elsewhere_refuses_in_one_line(tmp_path):
    """By path from another folder, no PYTHONPATH: the kit still imports, and a bad input is the usual one line."""
    done = _by_path("task2_regression/predict.py", "--run", str(tmp_path / "no_run"), "--test-set",
                    str(tmp_path / "no_test_set"), "--out", str(tmp_path / "pred"), cwd=tmp_path)
    text = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("no_run" in errors[0] or "no_test_set" in errors[0]), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == []
