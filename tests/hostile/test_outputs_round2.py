"""Issue 20, round 2: "work or inputs destroyed" and "partial output", closed in `util.outdir` / `util.atomic`.

Each case runs the real CLI (in-process through `refuse`, or as a real process where the case needs one:
two writers at once, a file-size limit) and asserts exit 2, one line naming the file or flag, no
traceback, and an unchanged hash listing of the inputs and outputs (`tree_state`).

- ``--overwrite`` never writes onto or into an input (realpaths), a run's checkpoint, or a FIFO /
  character device / socket;
- temporaries carry the kit's mark; cleanup leaves a user's ``.keep.tmp-thesis`` alone;
- lock files: a second writer to one --out waits (submit.py) or is refused (synthetic, train);
- a regenerated dataset replaces the whole folder;
- every writing script takes ``--overwrite`` (benchmarks.gpu, ...), and refuses before any work;
- a full disk (``RLIMIT_FSIZE``) leaves no partial folder and keeps the previous checkpoint.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hostile.conftest import REPO, _check, tree_state

DEAD_PID = 2**22 + 1  # above Linux's PID_MAX_LIMIT: no process has it (as after a kill)


def _main(module: str):
    return importlib.import_module(module).main


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


@contextlib.contextmanager
def _held_by_another_writer(out: Path):
    """Hold ``out``'s lock file the way another process does (its own open file description)."""
    from util.outdir import lock_path

    lock = lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 4242: python -m some.writer --out ...\n")
    try:
        yield lock
    finally:
        os.unlink(lock)
        os.close(fd)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))


def _limited(fsize: int):
    def limit():  # in the child, before exec: writes beyond fsize bytes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return limit


def _run(command: list, fsize: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, command)], capture_output=True, text=True, cwd=REPO, env=_env(),
                          timeout=timeout, preexec_fn=_limited(fsize) if fsize else None)


def _refused_process(command: list, names: list, watch: list, fsize: int | None = None) -> str:
    before = tree_state(*watch)
    result = _run(command, fsize)
    return _check(result.returncode, result.stdout + result.stderr, [str(n) for n in names], before, watch)


def _listing(folder: Path) -> dict:
    """``{name: (mode, inode, size, mtime)}`` by lstat, reading nothing (a FIFO must never be opened here)."""
    return {str(p): (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns)
            for p in sorted(folder.rglob("*")) for st in [os.lstat(p)]}


def _devnull_link(folder: Path, name: str = "report.json") -> Path:
    link = folder / name
    link.symlink_to(os.devnull)  # a character device behind an innocent-looking name
    return link


# ----------------------------------------------------------------------------- 1. never an input
def test_evaluation_task2_out_inside_the_labels_is_refused(refuse, task2_dataset, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(task2_dataset / "test_set" / "labels", labels)
    line = refuse(_main("evaluation.task2"), ["--predictions", labels, "--labels", labels,
                                              "--out", labels / "sub-101.json", "--overwrite"],
                  names=["--out"], watch=[tmp_path])
    assert "input" in line


def test_evaluation_task2_out_symlinked_onto_a_label_file_is_refused(refuse, task2_dataset, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(task2_dataset / "test_set" / "labels", labels)
    link = tmp_path / "report.json"
    link.symlink_to(labels / "sub-101.json")  # the realpath is an input
    refuse(_main("evaluation.task2"), ["--predictions", tmp_path / "pred", "--labels", labels, "--out", link,
                                       "--overwrite"], names=["--out"], watch=[tmp_path])


def test_evaluation_task2_noise_predictions_are_an_input_too(refuse, task2_dataset, tmp_path):
    noise = tmp_path / "noise"
    shutil.copytree(task2_dataset / "test_set" / "labels", noise)
    refuse(_main("evaluation.task2"), ["--predictions", tmp_path / "p", "--labels", tmp_path / "l",
                                       "--noise-predictions", noise, "--out", noise / "sub-102.json", "--overwrite"],
           names=["--out"], watch=[tmp_path])


def test_task2_evaluate_out_onto_a_split_data_file_is_refused(refuse, task2_tiny_run, task2_dataset):
    split = task2_dataset / "derivatives" / "split_data"
    target = sorted(split.glob("test_-_*_-_eeg.npy"))[0]
    refuse(_main("task2_regression.evaluate"), ["--run", task2_tiny_run, "--data", task2_dataset, "--out", target,
                                                "--overwrite"], names=["--out"], watch=[target, task2_tiny_run])


def test_se_evaluate_out_onto_the_runs_checkpoint_is_refused(refuse, tiny_se_run, kul_dataset, tmp_path):
    run = _copy_run(tiny_se_run, tmp_path / "run")
    refuse(_main("speaker_extraction.evaluate"), ["--run", run, "--data", kul_dataset, "--out", run / "best.pt",
                                                  "--overwrite", "--no-aad", "--no-progress"],
           names=["--out"], watch=[tmp_path])


def test_se_predict_out_onto_the_runs_checkpoint_is_refused(refuse, tiny_se_run, tmp_path):
    run = _copy_run(tiny_se_run, tmp_path / "run")
    refuse(_main("speaker_extraction.predict"), ["--run", run, "--mixture", tmp_path / "mix.wav", "--eeg",
                                                 tmp_path / "eeg.npy", "--out", run / "best.pt", "--overwrite"],
           names=["--out"], watch=[tmp_path])


def test_se_predict_out_onto_another_runs_checkpoint_is_refused(refuse, tiny_se_run, tmp_path):
    """Not an input here (--run is a checkpoint file of run A): the checkpoint rule alone refuses run B's."""
    other = _copy_run(tiny_se_run, tmp_path / "other")
    line = refuse(_main("speaker_extraction.predict"), ["--run", tiny_se_run / "best.pt", "--mixture",
                                                        tmp_path / "mix.wav", "--eeg", tmp_path / "eeg.npy",
                                                        "--out", other / "last.pt", "--overwrite"],
                  names=["--out"], watch=[tmp_path])
    assert "checkpoint" in line


def test_evaluation_se_out_inside_the_estimates_is_refused(refuse, tmp_path):
    import numpy as np
    import scipy.io.wavfile

    folders = {name: tmp_path / name for name in ("est", "ref", "mix")}
    for folder in folders.values():
        folder.mkdir()
        scipy.io.wavfile.write(folder / "a.wav", 8000, np.zeros(8000, dtype=np.float32))
    refuse(_main("evaluation.speaker_extraction"), ["--estimates", folders["est"], "--references", folders["ref"],
                                                    "--mixtures", folders["mix"], "--out", folders["est"] / "a.wav",
                                                    "--overwrite"], names=["--out"], watch=[tmp_path])


@pytest.mark.parametrize("where, extra", [("data", ["--per-subject"]), ("inside", ["--per-subject"]),
                                          ("inside", []), ("inside", ["--per-subject", "--overwrite"])])
def test_train_out_in_the_dataset_is_refused(refuse, task2_tiny_config, task2_dataset, where, extra):
    """train.py --per-subject --out DATA wrote into the dataset; a plain run refuses the same (and inside it)."""
    out = task2_dataset if where == "data" else task2_dataset / "runs"
    refuse(_main("task2_regression.train"), ["--config", task2_tiny_config, "--data", task2_dataset, "--out", out,
                                             *extra], names=["--out"], watch=[task2_dataset])


def test_task2_predict_out_inside_the_test_set_is_refused(refuse, task2_tiny_run, task2_dataset):
    test_set = task2_dataset / "test_set" / "TASK2_regression"
    refuse(_main("task2_regression.predict"), ["--run", task2_tiny_run, "--test-set", test_set,
                                               "--out", test_set / "pred", "--overwrite"],
           names=["--out"], watch=[test_set])


def test_submit_out_inside_the_test_set_is_refused(refuse, task2_dataset):
    test_set = task2_dataset / "test_set" / "TASK2_regression"
    refuse(_main("submit"), ["--task", "2", "--predictions", task2_dataset / "test_set" / "labels", "--test-set",
                             test_set, "--group", "g", "--out", test_set / "zips"], names=["--out"], watch=[test_set])


# ----------------------------------------------------------------------------- 2. never a run's checkpoint
@pytest.mark.parametrize("name", ["config.yaml", "log.csv", "curves.png", "notes.pt"])
def test_report_onto_a_runs_own_file_is_refused(refuse, task2_tiny_run, task2_dataset, tmp_path, name):
    run = _copy_run(task2_tiny_run, tmp_path / "run")
    (run / name).touch()
    refuse(_main("task2_regression.evaluate"), ["--run", run, "--data", task2_dataset, "--out", run / name,
                                                "--overwrite"], names=["--out"], watch=[tmp_path])


def test_reports_and_predictions_may_sit_beside_their_run(task2_tiny_run, task2_dataset, tmp_path):
    """The one exception to "never inside an input": a new name in the --run folder (docs/task2.md's R/pred)."""
    from util.errors import run_cli

    run = _copy_run(task2_tiny_run, tmp_path / "run")
    before = tree_state(run)
    with pytest.raises(SystemExit) as done:
        run_cli(_main("task2_regression.predict"), ["--run", str(run), "--test-set",
                                                    str(task2_dataset / "test_set" / "TASK2_regression"),
                                                    "--out", str(run / "pred")])
    assert done.value.code == 0
    after = tree_state(run)
    assert {k: v for k, v in after.items() if not k.startswith(str(run / "pred"))} == before  # the run untouched
    assert sorted(p.name for p in (run / "pred").iterdir()) == [".eegkit-output", "sub-101.json", "sub-102.json"]


def test_task2_predict_overwrite_never_replaces_a_run(refuse, task2_tiny_run, task2_dataset, tmp_path):
    other = _copy_run(task2_tiny_run, tmp_path / "other_run")
    line = refuse(_main("task2_regression.predict"), ["--run", task2_tiny_run, "--test-set",
                                                      task2_dataset / "test_set" / "TASK2_regression",
                                                      "--out", other, "--overwrite"],
                  names=["--out"], watch=[tmp_path])
    assert "run" in line


def test_report_into_a_runs_checkpoints_folder_is_refused(refuse, task2_dataset, task2_tiny_run, tmp_path):
    run = _copy_run(task2_tiny_run, tmp_path / "run")
    (run / "checkpoints").mkdir(exist_ok=True)
    refuse(_main("evaluation.task2"), ["--predictions", tmp_path / "p", "--labels", task2_dataset / "test_set" /
                                       "labels", "--out", run / "checkpoints" / "report.json", "--overwrite"],
           names=["--out"], watch=[tmp_path])


def test_train_into_a_runs_checkpoints_folder_is_refused(refuse, task2_tiny_config, task2_dataset, task2_tiny_run,
                                                         tmp_path):
    run = _copy_run(task2_tiny_run, tmp_path / "run")
    (run / "checkpoints").mkdir(exist_ok=True)
    refuse(_main("task2_regression.train"), ["--config", task2_tiny_config, "--data", task2_dataset,
                                             "--out", run / "checkpoints", "--overwrite"],
           names=["--out"], watch=[tmp_path])


# ----------------------------------------------------------------------------- 3. never a FIFO, device or socket
def _special(kind: str, folder: Path) -> Path:
    if kind == "fifo":
        path = folder / "out.json"
        os.mkfifo(path)
        return path
    if kind == "devnull":
        return _devnull_link(folder)
    path = folder / "s.json"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()
    return path


SPECIAL_CASES = [
    ("evaluation.task2", "fifo", ["--predictions", "T/p", "--labels", "T/l", "--out", "X", "--overwrite"], "--out"),
    ("evaluation.task2", "devnull", ["--predictions", "T/p", "--labels", "T/l", "--plot", "X", "--overwrite"],
     "--plot"),
    ("evaluation.task2", "socket", ["--predictions", "T/p", "--labels", "T/l", "--out", "X", "--overwrite"], "--out"),
    ("task2_regression.evaluate", "fifo", ["--run", "T/r", "--data", "T/d", "--out", "X", "--overwrite"], "--out"),
    ("speaker_extraction.predict", "fifo", ["--run", "T/r", "--mixture", "T/m.wav", "--eeg", "T/e.npy", "--out", "X",
                                            "--overwrite"], "--out"),
    ("speaker_extraction.predict", "devnull", ["--run", "T/r", "--mixture", "T/m.wav", "--eeg", "T/e.npy",
                                               "--out", "X", "--overwrite"], "--out"),
    ("speaker_extraction.evaluate", "devnull", ["--run", "T/r", "--data", "T/d", "--out", "X", "--overwrite"],
     "--out"),
    ("evaluation.speaker_extraction", "fifo", ["--estimates", "T/e", "--references", "T/r", "--mixtures", "T/m",
                                               "--out", "X", "--overwrite"], "--out"),
    ("evaluation.aad", "fifo", ["--correlations", "T/c.csv", "--out", "X", "--overwrite"], "--out"),
    ("benchmarks.gpu", "fifo", ["--out", "X", "--overwrite"], "--out"),
    ("benchmarks.gpu", "devnull", ["--out", "T/g.txt", "--json", "X", "--overwrite"], "--json"),
    ("benchmarks.task2_excerpt", "devnull", ["--data", "T/d", "--out", "X", "--overwrite"], "--out"),
    ("synthetic", "fifo", ["kul", "--out", "X", "--overwrite"], "--out"),
    ("submit", "fifo", ["--task", "2", "--predictions", "T/p", "--test-set", "T/t", "--group", "g", "--out", "X",
                        "--overwrite"], "--out"),
    ("task2_regression.predict", "devnull", ["--run", "T/r", "--test-set", "T/t", "--out", "X", "--overwrite"],
     "--out"),
]


@pytest.mark.parametrize("module, kind, argv, flag", SPECIAL_CASES,
                         ids=[f"{m}:{k}:{f}" for m, k, _, f in SPECIAL_CASES])
def test_out_that_is_not_a_regular_file_is_refused_even_with_overwrite(refuse, tmp_path, module, kind, argv, flag):
    special = _special(kind, tmp_path)
    argv = [special if a == "X" else (tmp_path / a[2:] if a.startswith("T/") else a) for a in argv]
    before = _listing(tmp_path)  # tree_state would open the FIFO: compare by lstat instead
    line = refuse(_main(module), argv, names=[flag], watch=[])
    assert "regular file" in line or "not a folder" in line
    assert _listing(tmp_path) == before
    assert os.path.realpath(os.devnull) == "/dev/null" and Path(os.devnull).is_char_device()


def test_atomic_writes_never_replace_a_fifo_or_device(tmp_path):
    """The write layer refuses the same (a path swapped for a FIFO after the CLI's checks)."""
    from util.atomic import atomic_write_text
    from util.errors import EEGKitError

    for path in (_special("fifo", tmp_path), _special("devnull", tmp_path)):
        before = _listing(tmp_path)
        with pytest.raises(EEGKitError, match="not a regular file"):
            atomic_write_text(path, "x")
        assert _listing(tmp_path) == before


# ----------------------------------------------------------------------------- 4. the kit's own temporaries only
def test_cleanup_removes_only_the_kits_temporaries_of_finished_writers(tmp_path):
    from util.atomic import temp_name
    from util.outdir import clean_temporaries

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = [temp_name("last.pt", ".pt", pid=DEAD_PID), temp_name("pred", pid=DEAD_PID)]
        live = [temp_name("best.pt", ".pt"), temp_name("log.csv", ".csv", pid=sleeper.pid)]
        forged = temp_name("x.json", ".json", pid=DEAD_PID)
        forged = forged[:-9] + ("0" if forged[-9] != "0" else "1") + forged[-8:]  # the check no longer matches
        users = [".keep.tmp-thesis", ".thesis.tmp-backup", ".pred.tmp-mine", ".notes.eegkit-tmp-1-x", forged]
        for name in dead + live + users:
            if name == dead[1] or name == ".pred.tmp-mine":  # folders (staged_dir's temporaries are folders)
                (tmp_path / name).mkdir()
                (tmp_path / name / "file.json").write_text("x")
            else:
                (tmp_path / name).write_text("x")
        removed = clean_temporaries(tmp_path)
        assert sorted(p.name for p in removed) == sorted(dead)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(live + users)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_predict_overwrite_keeps_a_users_look_alike_sibling(task2_tiny_run, task2_dataset, tmp_path):
    """P/.pred.tmp-mine beside P/pred survives a replacing write of P/pred (and a kit temp of a dead run goes)."""
    from util.atomic import temp_name
    from util.errors import run_cli

    pred = tmp_path / "pred"
    mine = tmp_path / ".pred.tmp-mine"
    mine.mkdir()
    (mine / "draft.json").write_text("my own notes")
    stale = tmp_path / temp_name("pred", pid=DEAD_PID)
    stale.mkdir()
    argv = ["--run", str(task2_tiny_run), "--test-set", str(task2_dataset / "test_set" / "TASK2_regression"),
            "--out", str(pred)]
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit) as done:
            run_cli(_main("task2_regression.predict"), argv + extra)
        assert done.value.code == 0
    assert (mine / "draft.json").read_text() == "my own notes"
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pred.tmp-mine", "pred"]


def test_train_overwrite_keeps_a_users_look_alike_files(task2_tiny_config, task2_dataset, task2_tiny_run, tmp_path):
    from util.errors import run_cli

    run = _copy_run(task2_tiny_run, tmp_path / "run")
    for name in (".keep.tmp-thesis", ".thesis.tmp-backup"):
        (run / name).write_text("years of work")
    with pytest.raises(SystemExit) as done:
        run_cli(_main("task2_regression.train"), ["--config", str(task2_tiny_config), "--data", str(task2_dataset),
                                                  "--out", str(run), "--overwrite"])
    assert done.value.code == 0
    for name in (".keep.tmp-thesis", ".thesis.tmp-backup"):
        assert (run / name).read_text() == "years of work"


def test_submit_counts_a_look_alike_as_the_users_file(refuse, task2_dataset, tmp_path):
    """.keep.tmp-thesis in --out is the user's: refused without --overwrite, kept with it."""
    from util.errors import run_cli

    out = tmp_path / "out"
    out.mkdir()
    (out / ".keep.tmp-thesis").write_text("mine")
    argv = ["--task", "2", "--predictions", task2_dataset / "test_set" / "labels", "--test-set",
            task2_dataset / "test_set" / "TASK2_regression", "--group", "g", "--out", out]
    refuse(_main("submit"), argv, names=["--out"], watch=[tmp_path])
    with pytest.raises(SystemExit) as done:
        run_cli(_main("submit"), [str(a) for a in argv] + ["--overwrite"])
    assert done.value.code == 0 and (out / ".keep.tmp-thesis").read_text() == "mine"


# ----------------------------------------------------------------------------- 5. lock files
def test_two_submits_on_one_out_are_serialised(task2_dataset, tmp_path):
    """Two real submit.py processes start while --out is locked: both wait, then take _1 and _2 in turn."""
    out = tmp_path / "out"
    command = ["submit.py", "--task", "2", "--predictions", task2_dataset / "test_set" / "labels", "--test-set",
               task2_dataset / "test_set" / "TASK2_regression", "--group", "g", "--out", out]
    with _held_by_another_writer(out):
        processes = [subprocess.Popen([sys.executable, *map(str, command)], cwd=REPO, env=_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(4.0)  # both have validated and wait for the lock
        assert all(p.poll() is None for p in processes), "a submit finished while --out was locked"
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    zips = sorted(p.name for p in out.iterdir() if p.suffix == ".zip")
    assert zips == ["task_2_group_g_submission_1.zip", "task_2_group_g_submission_2.zip"]
    assert sorted(line.split()[1] for out_text, _ in results for line in out_text.splitlines()
                  if line.startswith("wrote")) == [str(out / z) for z in zips]
    assert not list(tmp_path.glob(".out.*"))  # no lock file or temporary left


def test_two_synthetic_runs_on_one_new_out_never_mix(tmp_path):
    """A second generator on the same new --out is refused while the first writes; the folder is the first's."""
    from synthetic.task2 import generate
    from util.outdir import lock_path

    out = tmp_path / "data"
    flags = ["--subjects", "1", "--minutes", "1", "--test-subjects", "1", "--test-minutes", "0.5", "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "synthetic", "task2", "--out", str(out), "--seed", "1", *flags],
                             cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not lock_path(out).exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert first.poll() is None, "the first generator ended before the second could start"
    second = _run(["-m", "synthetic", "task2", "--out", out, "--seed", "2", *flags])
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    line = _check(second.returncode, second.stdout + second.stderr, ["--out"], {}, [])
    assert "another eegkit process" in line or "not empty" in line  # refused while it writes, or after
    reference = tmp_path / "reference"
    generate(reference, subjects=1, minutes=1.0, seed=1, test_subjects=1, test_minutes=0.5, progress=False)
    made = {str(p.relative_to(out)): v for p, v in ((Path(k), v) for k, v in tree_state(out).items()) if p != out}
    expected = {str(p.relative_to(reference)): v for p, v in ((Path(k), v) for k, v in tree_state(reference).items())
                if p != reference}
    made.pop(".eegkit-output")
    assert made == expected  # every file of seed 1, nothing of seed 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "reference"]


def test_training_into_a_locked_run_folder_is_refused(refuse, task2_tiny_config, task2_dataset, tmp_path):
    out = tmp_path / "run"
    with _held_by_another_writer(out):
        line = refuse(_main("task2_regression.train"), ["--config", task2_tiny_config, "--data", task2_dataset,
                                                        "--out", out], names=["--out"], watch=[tmp_path])
    assert "another eegkit process" in line and "pid 4242" in line


def test_synthetic_into_a_locked_out_is_refused(refuse, tmp_path):
    out = tmp_path / "data"
    with _held_by_another_writer(out):
        refuse(_main("synthetic"), ["kul", "--out", out, "--subjects", "1", "--trials", "1", "--minutes", "0.05",
                                    "--no-progress"], names=["--out"], watch=[tmp_path])


def test_lock_files_leave_nothing_behind(tmp_path):
    """Released, refused or re-entered: no lock file and no folder made for it stays (nothing written)."""
    from util.errors import EEGKitError
    from util.outdir import lock_path, out_lock

    out = tmp_path / "new" / "nested" / "run"
    with out_lock(out) as lock:
        assert lock == lock_path(out) and lock.is_file() and "pid" in lock.read_text()
        with out_lock(out):  # the same process again: re-entrant
            pass
        assert lock.is_file()
    assert list(tmp_path.iterdir()) == []
    with _held_by_another_writer(tmp_path / "run"):
        before = tree_state(tmp_path)
        with pytest.raises(EEGKitError, match="another eegkit process .*pid 4242"):
            with out_lock(tmp_path / "run", wait_s=0.2):
                pass
        assert tree_state(tmp_path) == before


# ----------------------------------------------------------------------------- 6. regenerate = replace whole
def _synthetic(argv: list) -> None:
    from util.errors import run_cli

    with pytest.raises(SystemExit) as done:
        run_cli(_main("synthetic"), [str(a) for a in argv])
    assert done.value.code == 0


def test_regenerated_dataset_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "kul"
    small = ["--trials", "1", "--minutes", "0.05", "--no-progress"]
    _synthetic(["kul", "--out", out, "--subjects", "2", "--seed", "1", *small])
    (out / ".eegkit_cache").mkdir()  # what a training run leaves in the dataset
    (out / ".eegkit_cache" / "S2_trial1.npy").write_bytes(b"cached")
    _synthetic(["kul", "--out", out, "--subjects", "1", "--seed", "2", "--overwrite", *small])
    assert sorted(p.name for p in out.iterdir()) == [".eegkit-output", "S1.mat", "stimuli"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kul"]


def test_regenerating_over_a_users_files_is_refused(refuse, tmp_path):
    out = tmp_path / "data"
    (out / "derivatives").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    line = refuse(_main("synthetic"), ["task2", "--out", out, "--overwrite", "--no-progress"], names=["--out"],
                  watch=[tmp_path])
    assert "notes.txt" in line


def test_predict_overwrite_refuses_a_folder_of_other_files(refuse, task2_tiny_run, task2_dataset, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "sub-101.json").write_text("{}")
    (out / "thesis.tex").write_text("years of work")
    refuse(_main("task2_regression.predict"), ["--run", task2_tiny_run, "--test-set",
                                               task2_dataset / "test_set" / "TASK2_regression", "--out", out,
                                               "--overwrite"], names=["--out", "thesis.tex"], watch=[tmp_path])


# ----------------------------------------------------------------------------- 7. every script takes --overwrite
BENCH_CASES = [
    ("benchmarks.gpu", ["--out", "OLD"], "--out"),
    ("benchmarks.gpu", ["--out", "NEW", "--json", "OLD"], "--json"),
    ("benchmarks.task2_models", ["--json", "OLD"], "--json"),
    ("benchmarks.speaker_extraction", ["--json-out", "OLD"], "--json-out"),
    ("benchmarks.bf16_validation", ["--work", "NEWDIR", "--out", "OLD"], "--out"),
    ("docs.make_import_graph", ["--out", "OLD"], "--out"),
]


@pytest.mark.parametrize("module, argv, flag", BENCH_CASES, ids=[f"{m}:{f}" for m, _, f in BENCH_CASES])
def test_writing_scripts_never_replace_an_existing_file_unasked(refuse, tmp_path, module, argv, flag):
    old = tmp_path / "old.txt"
    old.write_text("a user's file")
    names = {"OLD": old, "NEW": tmp_path / "new.txt", "NEWDIR": tmp_path / "work"}
    line = refuse(_main(module), [names.get(a, a) for a in argv], names=[flag], watch=[tmp_path])
    assert "--overwrite" in line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="with CUDA the benchmark itself would run")
def test_gpu_benchmark_overwrite_replaces_its_report(tmp_path):
    from benchmarks.gpu import main

    out = tmp_path / "gpu.txt"
    out.write_text("an older report")
    assert main(["--out", str(out), "--overwrite"]) == 0
    assert "no GPU was available" in out.read_text()


def test_bf16_validation_refuses_a_leftover_run_before_generating_data(refuse, tmp_path):
    work = tmp_path / "work"
    (work / "fp32_seed0").mkdir(parents=True)
    (work / "fp32_seed0" / "log.csv").write_text("epoch\n0\n")
    line = refuse(_main("benchmarks.bf16_validation"), ["--work", work, "--seeds", "0", "--epochs", "1"],
                  names=["--work", "fp32_seed0"], watch=[tmp_path])
    assert not (work / "data").exists() and "--overwrite" in line


# ----------------------------------------------------------------------------- 8. disk full: nothing partial
FSIZE = 64 * 1024  # bytes a process may write per file (RLIMIT_FSIZE): markers and logs fit, data does not


def test_disk_full_submit_leaves_no_folder(task2_dataset, tmp_path):
    out = tmp_path / "zips"
    line = _refused_process(["submit.py", "--task", "2", "--predictions", task2_dataset / "test_set" / "labels",
                             "--test-set", task2_dataset / "test_set" / "TASK2_regression", "--group", "g",
                             "--out", out], names=[out], watch=[tmp_path], fsize=FSIZE)
    assert "task_2_group_g_submission_1.zip" in line and "large" in line
    assert not out.exists()


def test_disk_full_synthetic_leaves_no_folder(tmp_path):
    out = tmp_path / "data"
    line = _refused_process(["-m", "synthetic", "task2", "--out", out, "--subjects", "1", "--minutes", "1",
                             "--test-subjects", "1", "--test-minutes", "0.5", "--no-progress"],
                            names=[out], watch=[tmp_path], fsize=FSIZE)
    assert "large" in line and ".eegkit-tmp-" not in line  # named as the user knows it
    assert list(tmp_path.iterdir()) == []


def test_disk_full_keeps_the_previous_checkpoint(task2_tiny_run, task2_dataset, tmp_path):
    """--resume for one more epoch under a file-size limit: one OSError line naming the checkpoint (not torch's
    RuntimeError), and best.pt / last.pt are the previous ones, byte for byte."""
    run = _copy_run(task2_tiny_run, tmp_path / "run")
    checkpoints = [run / "best.pt", run / "last.pt"]
    assert min(p.stat().st_size for p in checkpoints) > 8192
    line = _refused_process(["-m", "task2_regression.train", "--config", run / "config.yaml", "--data", task2_dataset,
                             "--out", run, "--resume", "--epochs", "2"],
                            names=["best.pt", "last.pt"], watch=checkpoints, fsize=8192)
    assert "File too large" in line and "RuntimeError" not in line
    assert not list(run.glob(".*eegkit-tmp*")) and not list(tmp_path.glob(".*eegkit-lock"))


def test_disk_full_predict_keeps_the_old_folder(task2_tiny_run, task2_dataset, tmp_path):
    from util.errors import run_cli

    test_set = task2_dataset / "test_set" / "TASK2_regression"
    pred = tmp_path / "pred"
    with pytest.raises(SystemExit) as done:
        run_cli(_main("task2_regression.predict"), ["--run", str(task2_tiny_run), "--test-set", str(test_set),
                                                    "--out", str(pred)])
    assert done.value.code == 0
    _refused_process(["-m", "task2_regression.predict", "--run", task2_tiny_run, "--test-set", test_set,
                      "--out", pred, "--overwrite"], names=[pred], watch=[tmp_path], fsize=FSIZE)


def test_ridge_training_into_a_locked_run_folder_is_refused(refuse, task2_dataset, tmp_path):
    """The closed-form ridge fit bypasses the trainer's loop; its writes take the same lock."""
    out = tmp_path / "run"
    with _held_by_another_writer(out):
        line = refuse(_main("task2_regression.train"),
                      ["--config", REPO / "task2_regression/configs/ridge.yaml", "--data", task2_dataset, "--out", out,
                       "model.n_taps=4", "model.alphas=[1.0]"], names=["--out"], watch=[tmp_path])
    assert "another eegkit process" in line and "pid 4242" in line
