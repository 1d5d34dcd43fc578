"""util.errors.run_cli: what slips through a CLI is one line (exit 2); --debug / EEGKIT_DEBUG=1 shows the traceback."""
from __future__ import annotations

import errno
import json
import os

import pytest


def _raiser(error):
    def main(argv):
        raise error
    return main


def _deep_json(argv):
    json.loads("[" * 100000 + "]" * 100000)


def _bad_utf8(argv):
    b"\xff\xfe not utf-8".decode("utf-8")


CASES = [
    ("permission", _raiser(PermissionError(errno.EACCES, "Permission denied", "/data/secret.npy")), "/data/secret.npy"),
    ("missing_folder", _raiser(FileNotFoundError(errno.ENOENT, "No such file", "/no/such/dir")), "/no/such/dir"),
    ("disk_full", _raiser(OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.pt")), "no space left"),
    ("read_only_fs", _raiser(OSError(errno.EROFS, "Read-only file system", "/ro/out.json")), "/ro/out.json"),
    ("is_a_directory", _raiser(IsADirectoryError(errno.EISDIR, "Is a directory", "/runs/x")), "/runs/x"),
    ("unicode", _bad_utf8, "decode"),
    ("recursion", _deep_json, "RecursionError"),
    ("memory", _raiser(MemoryError()), "MemoryError"),
]


@pytest.mark.parametrize("name,main,words", CASES, ids=[c[0] for c in CASES])
def test_run_cli_turns_errors_into_one_line(refuse, tmp_path, name, main, words):
    refuse(main, [], names=[words], watch=[tmp_path])


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(capsys, monkeypatch, how):
    from util.errors import EEGKitError, run_cli

    seen = []

    def main(argv):
        seen.append(list(argv))
        raise EEGKitError("--thing: bad")

    if how == "env":
        monkeypatch.setenv("EEGKIT_DEBUG", "1")
    with pytest.raises(SystemExit) as done:
        run_cli(main, ["--x", "1"] + (["--debug"] if how == "flag" else []))
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback" in err and "error: --thing: bad" in err
    assert seen == [["--x", "1"]]  # --debug is taken out before main sees the arguments


def test_help_lists_the_debug_flag(capsys):
    from task2_regression.predict import main
    from util.errors import run_cli

    with pytest.raises(SystemExit) as done:
        run_cli(main, ["--help"])
    assert done.value.code == 0 and "--debug" in capsys.readouterr().out


def test_interrupt_message_is_honest(capsys):
    from util.errors import run_cli

    with pytest.raises(SystemExit) as done:
        run_cli(_raiser(KeyboardInterrupt()), [])
    err = capsys.readouterr().err
    assert done.value.code == 130 and "no partial output was written" not in err and "interrupted" in err


ARGPARSE_CASES = [
    ("task2_regression.train", ["--config", "c.yaml", "--data", "d", "--out", "OUT", "--epochs", "abc"], "--epochs"),
    ("task2_regression.predict", ["--run", "r", "--test-set", "t", "--out", "OUT", "--checkpoint", "worst"],
     "--checkpoint"),
    ("speaker_extraction.train", ["--config", "c.yaml", "--data", "d", "--out", "OUT", "--epochs", "1.5"], "--epochs"),
    ("evaluation.aad", ["--correlations", "c.csv"], "--out"),
    ("synthetic", ["task2", "--out", "OUT", "--subjects", "many"], "--subjects"),
]


@pytest.mark.parametrize("module, argv, flag", ARGPARSE_CASES, ids=[c[0] + ":" + c[2] for c in ARGPARSE_CASES])
def test_argparse_mistakes_are_one_line(module, argv, flag, refuse, tmp_path):
    """A flag argparse itself rejects (bad type, bad choice, missing) is one `error:` line, not usage + error."""
    import importlib

    main = importlib.import_module(module if module != "synthetic" else "synthetic").main
    out = tmp_path / "out"
    refuse(main, [str(out) if a == "OUT" else a for a in argv], names=[flag], watch=[tmp_path])
