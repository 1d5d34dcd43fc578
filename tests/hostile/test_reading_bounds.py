"""Bounded reading, measured: every reader refuses a FIFO and ``/dev/zero`` in bounded memory and time.

Each case puts a named pipe (nobody ever writes to it) or a symbolic link to ``/dev/zero`` where one
input file belongs, and runs the CLI (or, for the ``.npz.gz`` stimulus reader, the function) the way
a user would. Before the fix, a FIFO blocked the reader forever and ``/dev/zero`` was read until the
kernel killed the process (24 GB for ``evaluation.task2 --predictions``).

How it is measured: one driver process (this file run as a script) imports the kit once, then
forks one child per case. The child sets ``resource.setrlimit(RLIMIT_AS, 2 GiB)``, arms
``SIGALRM`` and runs the CLI through `util.errors.run_cli`; the driver kills a child that is still
running after ``KILL_S`` seconds and takes its peak resident memory from ``os.wait4``. Each case
then asserts: exit status 2, one ``error:`` line naming the file, no traceback, done within
``QUICK_S`` seconds, resident memory grown by less than ``MAX_GROWTH`` over the driver's, and
nothing under the case's folder created, changed or deleted (compared with ``lstat``: the FIFO and
the link are never opened by the check itself).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIMIT_AS = 2 << 30          # address-space limit of each case's process
QUICK_S = 5.0               # a refusal must come within this (it is milliseconds when it works)
KILL_S = 20.0               # a case still running after this is killed and reported as a hang
MAX_GROWTH = 512 << 20      # resident memory a refusal may add to the driver's

SPECIAL = ("fifo", "dev_zero")

# case -> (what is replaced, the reader behind it)
CASES = {
    "task2_scorer_predictions_zip": "evaluation.task2 --predictions (the zip path itself)",
    "task2_scorer_predictions_json": "evaluation.task2 --predictions folder: one sub-XXX.json",
    "task2_scorer_labels_json": "evaluation.task2 --labels folder: one label JSON",
    "aad_correlations_csv": "evaluation.aad --correlations X.csv",
    "aad_correlations_npz": "evaluation.aad --correlations X.npz",
    "task2_predict_mapping": "task2_regression.predict: the test set's sub-XXX_mapping.json",
    "task2_predict_npz": "task2_regression.predict: preprocessed_eeg/sub-XXX_eeg.npz",
    "task2_predict_arrays": "task2_regression.predict --arrays X.npz",
    "se_predict_mixture": "speaker_extraction.predict --mixture X.wav",
    "se_predict_eeg": "speaker_extraction.predict --eeg X.npy",
    "se_predict_arrays": "speaker_extraction.predict --arrays X.npz",
    "split_data_npy": "the split_data loader (task2_regression.train): one split_data .npy",
    "kul_subject_mat": "the KUL reader (speaker_extraction.train): S1.mat",
    "kul_stimulus_wav": "the KUL corpus' audio (speaker_extraction.train): a stimulus wav",
    "submit_predictions_json": "submit.py --predictions folder: one sub-XXX.json",
    "se_scorer_wav": "evaluation.speaker_extraction --estimates folder: one wav",
    "stimulus_npz_gz": "util.features.load_audio: a stimulus .npz.gz",
    "cocktail_env_mat": "speaker_extraction.cocktail.read_cocktail: F_env.mat of the cocktail-party layout",
    "task1_scorer_predictions_zip": "evaluation.task1 --predictions (the zip path itself)",
    "task1_scorer_labels_json": "evaluation.task1 --labels folder: one label JSON",
    "task1_predict_mapping": "task1_match_mismatch.predict: the test set's sub-XXX_mapping.json",
    "task1_predict_eeg_npz": "task1_match_mismatch.predict: preprocessed_eeg/sub-XXX_eeg.npz",
    "task1_predict_stimulus_npz": "task1_match_mismatch.predict: the stimulus chunks .npz",
}

# Out of memory while reading names the input (was: "out of memory ... is an input far larger than expected?"):
# a sparse .npy whose header honestly declares 1.5 GB, within the 2 GiB array cap, read under the 2 GiB limit.
OOM_CASES = {"eeg_npy_1_5_gb_se_predict": "speaker_extraction.predict --eeg: a sparse 1.5-GB .npy"}


# --------------------------------------------------------------------------- the driver (run as a script)
def _load_audio_main(argv):
    """A CLI face for the ``.npz.gz`` stimulus reader: ``load_audio(argv[0])``."""
    from util.features import load_audio

    load_audio(argv[0])
    return 0


def _read_cocktail_main(argv):
    """A CLI face for the cocktail-party reader (used by speaker_extraction.experiments.aad)."""
    from speaker_extraction.cocktail import read_cocktail

    read_cocktail(argv[0])
    return 0


def _resolve(target: str):
    import importlib

    module, _, name = target.partition(":")
    return getattr(sys.modules["__main__"] if module == "__main__" else importlib.import_module(module), name)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_case(main, argv, log: Path) -> dict:
    import resource
    import signal
    import time

    start = time.monotonic()
    base_rss = _rss_bytes()
    pid = os.fork()
    if pid == 0:  # the case's own process
        code = 1
        try:
            resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            signal.alarm(int(KILL_S) + 5)  # a second guard: SIGALRM ends a blocked child
            from util.errors import run_cli

            run_cli(main, argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - shown in the log, reported by the test
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    status, usage, killed = None, None, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > KILL_S:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            killed = True
            break
        time.sleep(0.005)
    return {"code": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - start, "killed": killed,
            "peak_rss": usage.ru_maxrss * 1024, "base_rss": base_rss,
            "output": log.read_text(errors="replace") if log.exists() else ""}


def _driver(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    mains = {case["target"]: _resolve(case["target"]) for case in spec["cases"]}  # import everything first
    results = {}
    for case in spec["cases"]:
        results[case["id"]] = _run_case(mains[case["target"]], case["argv"], Path(spec["logs"]) / f"{case['id']}.log")
    Path(spec["results"]).write_text(json.dumps(results))


# --------------------------------------------------------------------------- the cases (built by pytest)
def lstat_state(*roots) -> dict:
    """``{path: sha256 | 'dir' | 'fifo' | 'link -> target' | ...}`` without following links or opening FIFOs."""
    state = {}
    for root in map(str, roots):
        if not os.path.lexists(root):
            state[root] = None
            continue
        paths = [root]
        if os.path.isdir(root) and not os.path.islink(root):
            for folder, dirs, files in os.walk(root):
                paths += [os.path.join(folder, name) for name in sorted(dirs + files)]
        for path in paths:
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                state[path] = "link -> " + os.readlink(path)
            elif stat.S_ISREG(mode) and os.lstat(path).st_size > (64 << 20):  # the sparse 1.5-GB file: no hashing
                info = os.lstat(path)
                state[path] = f"size {info.st_size} mtime {info.st_mtime_ns}"
            elif stat.S_ISREG(mode):
                with open(path, "rb") as handle:
                    state[path] = hashlib.sha256(handle.read()).hexdigest()
            else:
                state[path] = "dir" if stat.S_ISDIR(mode) else f"mode {stat.S_IFMT(mode):o}"
    return state


def make_special(path: Path, kind: str) -> Path:
    """Replace ``path`` by a FIFO (no writer, ever) or a symbolic link to /dev/zero."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def _build(name: str, kind: str, root: Path, fx: dict) -> dict:
    """One case: {target, argv, file (the special path), watch}."""
    import numpy as np

    from data_faults import copy_test_set, kul_copy, labels_copy, task2_copy, t2_file, write_wav

    root.mkdir(parents=True)
    out = root / "out"
    if name.startswith("task2_scorer"):
        labels, pred = labels_copy(fx["task2_dataset"], root)
        if name == "task2_scorer_predictions_zip":
            special = make_special(root / "submission.zip", kind)
            pred_arg = special
        elif name == "task2_scorer_predictions_json":
            special, pred_arg = make_special(sorted(pred.glob("*.json"))[0], kind), pred
        else:
            special, pred_arg = make_special(sorted(labels.glob("*.json"))[0], kind), pred
        return dict(target="evaluation.task2:main", file=special, watch=[root],
                    argv=["--predictions", pred_arg, "--labels", labels, "--out", out / "report.json"])
    if name.startswith("aad_"):
        special = make_special(root / ("corr.csv" if name.endswith("csv") else "corr.npz"), kind)
        return dict(target="evaluation.aad:main", file=special, watch=[root],
                    argv=["--correlations", special, "--out", out / "report.json"])
    if name in ("task2_predict_mapping", "task2_predict_npz"):
        test_dir = copy_test_set(fx["task2_dataset"], root)
        mapping = sorted(test_dir.glob("sub-*_mapping.json"))[0]
        if name == "task2_predict_mapping":
            special = make_special(mapping, kind)
        else:
            special = make_special(test_dir / "preprocessed_eeg" / f"{mapping.name.split('_')[0]}_eeg.npz", kind)
        return dict(target="task2_regression.predict:main", file=special, watch=[root],
                    argv=["--run", fx["task2_run"], "--test-set", test_dir, "--out", out])
    if name == "task2_predict_arrays":
        special = make_special(root / "in.npz", kind)
        return dict(target="task2_regression.predict:main", file=special, watch=[root],
                    argv=["--run", fx["task2_run"], "--arrays", special, "--out", root / "out.npz"])
    if name.startswith("se_predict"):
        fs, seconds = 8000, 2.0
        t = np.arange(int(seconds * fs)) / fs
        wav = write_wav(root / "mix.wav", 0.2 * np.sin(2 * np.pi * 180 * t), fs)
        npy = root / "eeg.npy"
        np.save(npy, np.random.default_rng(0).standard_normal((int(seconds * 128), 64)).astype(np.float32))
        if name == "se_predict_arrays":
            special = make_special(root / "in.npz", kind)
            argv = ["--run", fx["se_run"], "--arrays", special, "--out", root / "out.npz"]
        else:
            special = make_special(wav if name == "se_predict_mixture" else npy, kind)
            argv = ["--run", fx["se_run"], "--mixture", wav, "--eeg", npy, "--out", root / "out.wav"]
        return dict(target="speaker_extraction.predict:main", file=special, watch=[root], argv=argv)
    if name == "split_data_npy":
        data = task2_copy(fx["task2_dataset"], root)
        special = make_special(t2_file(data, "train", "eeg"), kind)
        return dict(target="task2_regression.train:main", file=special, watch=[root],
                    argv=["--config", fx["task2_config"], "--data", data, "--out", out])
    if name.startswith("kul_"):
        data = kul_copy(fx["kul_dataset"], root)
        if name == "kul_subject_mat":
            special, watch = make_special(data / "S1.mat", kind), [root]
        else:  # the EEG cache is written before the stimuli are read: watch the inputs themselves
            special = make_special(sorted((data / "stimuli").glob("*_dry.wav"))[0], kind)
            watch = [data / "stimuli", data / "S1.mat", out]
        return dict(target="speaker_extraction.train:main", file=special, watch=watch,
                    argv=["--config", fx["se_config"], "--data", data, "--out", out, "--no-progress"])
    if name == "submit_predictions_json":
        test_dir = copy_test_set(fx["task2_dataset"], root)
        _, pred = labels_copy(fx["task2_dataset"], root)
        special = make_special(sorted(pred.glob("*.json"))[0], kind)
        # submit lists every problem (this file's one line first), then one error line naming the folder
        return dict(target="submit:main", file=special, watch=[root], line_names=[pred],
                    argv=["--task", "2", "--predictions", pred, "--test-set", test_dir, "--group", "g", "--out", out])
    if name == "se_scorer_wav":
        folders = {key: root / key for key in ("est", "ref", "mix")}
        t = np.arange(8000) / 8000
        for folder in folders.values():
            folder.mkdir()
            write_wav(folder / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 97 * t), 8000)
        special = make_special(folders["est"] / "a.wav", kind)
        return dict(target="evaluation.speaker_extraction:main", file=special, watch=[root],
                    argv=["--estimates", folders["est"], "--references", folders["ref"], "--mixtures",
                          folders["mix"], "--out", out / "report.json", "--no-progress"])
    if name == "eeg_npy_1_5_gb_se_predict":
        t = np.arange(16000) / 8000
        wav = write_wav(root / "mix.wav", 0.2 * np.sin(2 * np.pi * 180 * t), 8000)
        npy = root / "eeg.npy"
        rows = 6_000_000  # x 64 float32 = 1.536 GB, declared honestly; the file is sparse (no disk used)
        header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 64), np.float32))
        header["shape"] = (rows, 64)
        with open(npy, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            handle.truncate(handle.tell() + rows * 64 * 4)
        return dict(target="speaker_extraction.predict:main", file=npy, watch=[root],
                    argv=["--run", fx["se_run"], "--mixture", wav, "--eeg", npy, "--out", root / "out.wav"])
    if name.startswith("task1_scorer"):
        labels = root / "labels_task1"
        shutil.copytree(fx["task2_dataset"] / "test_set" / "labels_task1", labels)
        pred = root / "pred"
        shutil.copytree(labels, pred)
        if name == "task1_scorer_predictions_zip":
            special = pred_arg = make_special(root / "task_1_group_g_submission_1.zip", kind)
        else:
            special, pred_arg = make_special(sorted(labels.glob("*.json"))[0], kind), pred
        return dict(target="evaluation.task1:main", file=special, watch=[root],
                    argv=["--predictions", pred_arg, "--labels", labels, "--out", out / "report.json"])
    if name.startswith("task1_predict"):
        test_dir = root / "TASK1_match_mismatch"
        shutil.copytree(fx["task2_dataset"] / "test_set" / "TASK1_match_mismatch", test_dir)
        mapping = sorted(test_dir.glob("sub-*_mapping.json"))[0]
        special = make_special({"task1_predict_mapping": mapping,
                                "task1_predict_eeg_npz": test_dir / "preprocessed_eeg"
                                / f"{mapping.name.split('_')[0]}_eeg.npz",
                                "task1_predict_stimulus_npz": sorted((test_dir / "stimulus").glob("*envelope*.npz"))[0],
                                }[name], kind)
        return dict(target="task1_match_mismatch.predict:main", file=special, watch=[root],
                    argv=["--run", fx["task1_run"], "--test-set", test_dir, "--out", out])
    if name == "cocktail_env_mat":
        import scipy.io

        folder = root / "cocktail"
        folder.mkdir()
        for name in ("trial_1.mat", "M_env.mat"):
            scipy.io.savemat(str(folder / name), {"x": np.zeros((1, 1))})
        special = make_special(folder / "F_env.mat", kind)  # the first file the reader opens
        return dict(target="__main__:_read_cocktail_main", file=special, watch=[root], argv=[folder])
    if name == "stimulus_npz_gz":
        special = make_special(root / "audiobook_1.npz.gz", kind)
        return dict(target="__main__:_load_audio_main", file=special, watch=[root], argv=[special])
    raise AssertionError(name)


@pytest.fixture(scope="module")
def task1_run(task2_dataset, tmp_path_factory) -> Path:
    """A Task 1 ridge run (closed form, envelope, 1-s windows) on the tiny dataset."""
    import yaml

    from task1_match_mismatch.train import train

    cfg = yaml.safe_load((REPO / "task1_match_mismatch" / "configs" / "ridge.yaml").read_text())
    cfg["data"]["window_s"] = 1.0
    run = tmp_path_factory.mktemp("bounds_task1") / "run"
    train(cfg, task2_dataset, run, say=lambda message: None)
    return run


@pytest.fixture(scope="module")
def bounded_runs(task2_dataset, kul_dataset, task2_tiny_run, tiny_se_run, task1_run, task2_tiny_config,
                 se_tiny_config, tmp_path_factory) -> dict:
    """Build every case, run them all in the driver, return {case id: (case, result, state before)}."""
    fx = dict(task2_dataset=task2_dataset, kul_dataset=kul_dataset, task2_run=task2_tiny_run, se_run=tiny_se_run,
              task1_run=task1_run, task2_config=task2_tiny_config, se_config=se_tiny_config)
    base = tmp_path_factory.mktemp("bounds")
    sys.path.insert(0, str(Path(__file__).parent))
    cases, before = {}, {}
    ids = [(f"{name}-{kind}", name, kind) for name in CASES for kind in SPECIAL] + [(n, n, None) for n in OOM_CASES]
    for case_id, name, kind in ids:
        case = _build(name, kind, base / case_id, fx)
        cases[case_id] = case
        before[case_id] = lstat_state(*case["watch"])
    spec = {"cases": [{"id": k, "target": c["target"], "argv": [str(a) for a in c["argv"]]} for k, c in cases.items()],
            "logs": str(base), "results": str(base / "results.json")}
    (base / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    env.pop("EEGKIT_DEBUG", None)
    budget = 120 + KILL_S * len(cases)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(base / "spec.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=budget)
    assert done.returncode == 0, f"driver failed:\n{done.stdout}\n{done.stderr}"
    results = json.loads((base / "results.json").read_text())
    return {k: (cases[k], results[k], before[k]) for k in cases}


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("name", list(CASES))
def test_reader_refuses_fifo_and_dev_zero_quickly_in_bounded_memory(bounded_runs, name, kind):
    case, result, before = bounded_runs[f"{name}-{kind}"]
    text = result["output"]
    assert not result["killed"], f"{CASES[name]}: still running after {KILL_S} s (a hang); output:\n{text}"
    assert result["code"] == 2, f"{CASES[name]}: exit status {result['code']}, expected 2; output:\n{text}"
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line:\n{text}"
    names = [str(n) for n in case.get("line_names", [case["file"]])]
    assert any(n in errors[0] for n in names), f"the line names none of {names}: {errors[0]}"
    says = [line for line in text.splitlines() if str(case["file"]) in line]
    assert says and ("named pipe" if kind == "fifo" else "character device") in says[0], text
    assert result["seconds"] < QUICK_S, f"{CASES[name]}: took {result['seconds']:.1f} s"
    assert result["peak_rss"] < LIMIT_AS
    assert result["peak_rss"] - result["base_rss"] < MAX_GROWTH, \
        f"{CASES[name]}: resident memory grew by {(result['peak_rss'] - result['base_rss']) >> 20} MiB"
    assert lstat_state(*case["watch"]) == before, "files changed under the case's folder"



@pytest.mark.parametrize("name", list(OOM_CASES))
def test_out_of_memory_while_reading_names_the_input(bounded_runs, name):
    case, result, before = bounded_runs[name]
    text = result["output"]
    assert not result["killed"] and result["code"] == 2, f"exit {result['code']}; output:\n{text}"
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(case["file"]) in errors[0] and "out of memory" in errors[0], text
    assert result["seconds"] < QUICK_S
    assert result["peak_rss"] - result["base_rss"] < MAX_GROWTH  # refused at the allocation, nothing read
    assert lstat_state(*case["watch"]) == before


if __name__ == "__main__":
    _driver(sys.argv[1])
