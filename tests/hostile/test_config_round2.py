"""Round 2 (issue 20): every value that reaches code goes through the one config owner, `util.config`.

Classes, each closed in one place and shown by its examples: a schema rule for every key of every
task's defaults (types, ranges, seeds, windows, names, subject ids, loss weights); model options
checked by their constructor's annotations and defaults (sizes bounded, lists not empty) and by their
size on the meta device; strict YAML (duplicate keys, anchors/aliases, over-long integers); a
checkpoint's stored config through the same checks in every predict/evaluate; flags typed at parse
time (`util.config.seed_arg`, `int_arg`, `float_arg`). Every CLI case goes through the `refuse`
harness: exit 2, no traceback, one line naming the key/flag/file, nothing changed on disk.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.hostile.conftest import REPO, TASK2_TINY

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _t2_train():
    from task2_regression.train import main

    return main


def _se_train():
    from speaker_extraction.train import main

    return main


# --------------------------------------------------------------------------- the schema covers every key
def _task_folders():
    return sorted(p.parent.parent for p in REPO.glob("*/configs/defaults.yaml"))


@pytest.mark.parametrize("task", _task_folders(), ids=lambda p: p.name)
def test_every_default_has_a_schema_rule(task):
    """Every key of every task's defaults.yaml has a rule in its schema.yaml, and no rule names a missing key."""
    from util.config import load_defaults, load_schema, resolve, uncovered_keys

    defaults, schema = load_defaults(task / "configs" / "defaults.yaml"), load_schema(task / "configs" / "schema.yaml")
    missing, stale = uncovered_keys(defaults, schema)
    assert missing == [] and stale == [], (missing, stale)
    resolve({}, defaults, schema)  # the defaults pass their own schema


@pytest.mark.parametrize("task", _task_folders(), ids=lambda p: p.name)
def test_every_seed_key_is_bounded(task):
    from util.config import SEED_MAX, leaf_keys, load_defaults, load_schema

    defaults, schema = load_defaults(task / "configs" / "defaults.yaml"), load_schema(task / "configs" / "schema.yaml")
    seeds = [k for k in leaf_keys(defaults) if k.rsplit(".", 1)[-1] == "seed"]
    assert seeds
    for key in seeds:
        assert schema[key].get("le") == SEED_MAX and schema[key].get("ge") == 0, key


def _model_classes():
    from speaker_extraction.models import MODEL_CLASSES
    from task2_regression.models import MODELS

    out = [(f"task2:{k}", v) for k, v in MODELS.items()] + [(f"se:{k}", v) for k, v in MODEL_CLASSES.items()]
    try:
        from task1_match_mismatch.models import MODELS as TASK1_MODELS
    except ImportError:  # the task's registry under another name: covered by its own tests
        TASK1_MODELS = {}
    return out + [(f"task1:{k}", v) for k, v in TASK1_MODELS.items()]


@pytest.mark.parametrize("name,model_class", _model_classes(), ids=[n for n, _ in _model_classes()])
def test_every_integer_model_option_is_bounded(name, model_class):
    """A billion for any integer option of any model is refused by `check_options`, naming the option."""
    import inspect

    from util.config import check_options
    from util.errors import EEGKitError

    params = inspect.signature(model_class.__init__).parameters
    ints = [k for k, p in params.items() if k not in ("self", "targets") and
            isinstance(p.default, int) and not isinstance(p.default, bool)]
    for key in ints:
        with pytest.raises(EEGKitError, match=rf"model\.{key}\b"):
            check_options("model", {key: 10**9}, model_class.__init__, getattr(model_class, "CONFIG_RANGES", None))


# --------------------------------------------------------------------------- Task 2 train: config values
TASK2_CASES = [  # (override(s), words the line must hold)
    (["loss.pearson=0"], "loss"),  # all loss weights 0
    (["target=envelope", "loss.pearson=0", "loss.kl=1"], "loss.kl"),  # kl acts on mel only
    (["model={type: ridge, alphas: []}"], "model.alphas"),
    (["model={type: ridge, alphas: [1.0, .nan]}"], "model.alphas"),
    (["train.seed=9223372036854775808"], "train.seed"),  # 2**63
    (["train.seed=18446744073709551616"], "train.seed"),  # 2**64
    (["train.seed=4294967296"], "train.seed"),  # 2**32: beyond NumPy's seed range
    (["train.seed=" + "9" * 401], "train.seed"),  # a 401-digit integer
    (["target=[mel]"], "target"),
    (["target={a: 1}"], "target"),
    (["model.type=[linear]"], "model.type"),
    (["model.type={a: 1}"], "model.type"),
    (["data.sampling=[fixed]"], "data.sampling"),
    (["data.normalize={x: 1}"], "data.normalize"),
    (["data.window_s=0.001"], "data.window_s"),  # shorter than one frame
    (["data.val_window_s=0.001"], "data.val_window_s"),
    (["data.hop_s=0.001"], "data.hop_s"),
    (["data.window_s=2", "model.n_taps=200"], "data.window_s"),  # shorter than the model's taps
    (["model.n_taps=1000000000"], "model.n_taps"),  # resource exhaustion, named
    (["model.n_taps=[16]"], "model.n_taps"),
    (["model={type: vlaai, filters: [0, 8], kernels: [3, 3]}"], "model.filters[0]"),
    (["model={type: vlaai, filters: 0}"], "model.filters"),
    (["model={type: vlaai, filters: []}"], "model.filters"),
    (["model={type: vlaai, filters: [8], kernels: [0]}"], "model.kernels[0]"),
    (["model={type: vlaai, filters: [4096, 4096], kernels: [64, 64]}"], "model.filters"),  # > 2**30 weights
    (["model={type: vlaai, n_blocks: 100000}"], "model.n_blocks"),
    (["model={type: vlaai, padding: [causal]}"], "model.padding"),
    (["model={type: cat_wavenet, layers: 65536}"], "model.layers"),
    (["model={type: cat_wavenet, attention_chunk: 0}"], "model.attention_chunk"),
    (["model={type: cat_wavenet, attention_chunk: [1]}"], "model.attention_chunk"),
    (["model={type: dprnn, dropout: .inf}"], "model.dropout"),
    (["data.stimulus_audio_dir=[a]"], "data.stimulus_audio_dir"),
    (["data.subjects={a: 1}"], "data.subjects"),
    (["data.subjects=[1, 2]"], "data.subjects[0]"),
    (["data.holdout_subjects=[sub-001, sub-001]"], "data.holdout_subjects"),
    (["targets=[mel, mel]"], "targets"),
    (["data.batch_size=1000000"], "data.batch_size"),
    (["train.epochs=1e300"], "train.epochs"),
]


@pytest.mark.parametrize("overrides,names", TASK2_CASES, ids=[" ".join(o)[:60] for o, _ in TASK2_CASES])
def test_task2_train_refuses_unchecked_values(refuse, task2_dataset, task2_tiny_config, tmp_path, overrides, names):
    out = tmp_path / "run"
    refuse(_t2_train(), ["--config", task2_tiny_config, "--data", task2_dataset, "--out", out, *overrides],
           names=[names], watch=[out, task2_tiny_config, task2_dataset])


# --------------------------------------------------------------------------- speaker extraction train
SE_CASES = [
    (["data.band=[10, 10.0000001]"], "data.band"),  # so narrow the filter design is singular
    (["data.band=[1.0e-9, 2.0e-9]"], "data.band"),  # so low: sosfiltfilt's LinAlgError
    (["data.band=[64, 70]"], "data.band"),  # the lower edge at Nyquist
    (["data.filter_order=100"], "data.filter_order"),
    (["data.split.protocol=loso", "data.split.test_subject=[1]"], "data.split.test_subject"),
    (["data.split.protocol=loso", "data.split.test_subject=one"], "data.split.test_subject"),
    (["data.split.protocol=loso", "data.split.test_subject=1.5"], "data.split.test_subject"),
    (["data.channels={a: 1}"], "data.channels"),
    (["data.channels=[Fz, 99]"], "data.channels[1]"),
    (["data.channels=[Fz, Fz]"], "data.channels"),
    (["data.channels=[]"], "data.channels"),
    (["data.window_s=0.001"], "data.window_s"),
    (["data.fs_eeg=1000000000"], "data.fs_eeg"),
    (["model.type=[neurospex]"], "neurospex"),
    (["model.N=100000"], "model.N"),
    (["model.R=1000"], "model.R"),
    (["model.adc_blocks=-1"], "model.adc_blocks"),
    (["train.seed=9223372036854775808"], "train.seed"),
    (["data.split.seed=9223372036854775808"], "data.split.seed"),
    (["data.split.seed=-1"], "data.split.seed"),
    (["data.include_repetitions=1"], "data.include_repetitions"),
    (["data.split.protocol={a: b}"], "data.split.protocol"),
]


@pytest.mark.parametrize("overrides,names", SE_CASES, ids=[" ".join(o)[:60] for o, _ in SE_CASES])
def test_se_train_refuses_unchecked_values(refuse, kul_dataset, tiny_se_run, se_tiny_config, tmp_path, overrides,
                                           names):
    out = tmp_path / "run"
    refuse(_se_train(), ["--config", se_tiny_config, "--data", kul_dataset, "--out", out, "--no-progress",
                         *overrides], names=[names], watch=[out, se_tiny_config, kul_dataset])


# --------------------------------------------------------------------------- strict YAML
def _yaml_case(kind: str, base: dict) -> str:
    text = yaml.safe_dump(base, sort_keys=False)
    if kind == "duplicate_key":
        return text + "train: {}\n"  # a second top-level `train:`
    if kind == "duplicate_nested_key":
        return text.replace("train:\n", "train:\n  seed: 1\n  seed: 2\n", 1)
    if kind == "billion_laughs":
        return BILLION_LAUGHS + text
    if kind == "anchor_alias":
        return text.replace("train:\n", "train: &t\n", 1) + "copy: *t\n"
    if kind == "merge_key":
        return "base: &b {lr: 0.1}\n" + text.replace("train:\n", "train:\n  <<: *b\n", 1)
    if kind == "long_integer":
        return text.replace("seed: 0", "seed: " + "1" * 401)
    if kind == "integer_2_63":
        return text.replace("seed: 0", "seed: 9223372036854775808")
    if kind == "key_is_a_list":
        return text + "? [a, b]\n: 1\n"
    if kind == "not_utf8":
        return text + "# \udcff\n"
    raise AssertionError(kind)


YAML_CASES = {"duplicate_key": "train", "duplicate_nested_key": "seed", "billion_laughs": "anchor",
              "anchor_alias": "anchor", "merge_key": "anchor", "long_integer": "digit",
              "integer_2_63": "train.seed", "key_is_a_list": "key", "not_utf8": "UTF-8"}


@pytest.mark.parametrize("task", ["task2", "se"])
@pytest.mark.parametrize("kind", list(YAML_CASES))
def test_strict_yaml_configs(refuse, task2_dataset, kul_dataset, tiny_se_run, tmp_path, task, kind):
    """Duplicate keys, anchors/aliases (a billion-laughs file returns at once), over-long integers: one line
    naming the file (and the key or line)."""
    from tests.conftest import TINY_SE_CONFIG

    base, data, main = (TASK2_TINY, task2_dataset, _t2_train()) if task == "task2" else \
        (TINY_SE_CONFIG, kul_dataset, _se_train())
    config = tmp_path / "hostile.yaml"
    text = _yaml_case(kind, base)
    config.write_bytes(text.encode("utf-8", "surrogateescape"))
    out = tmp_path / "run"
    line = refuse(main, ["--config", config, "--data", data, "--out", out], names=["hostile.yaml"],
                  watch=[out, config])
    assert YAML_CASES[kind] in line, line


@pytest.mark.parametrize("override,words", [("train.lr=*a", "alias"), ("train.lr=&a 1", "anchor"),
                                            ("train.betas={a: 1, a: 2}", "duplicate key"),
                                            ("train.seed=" + "7" * 50, "digit")])
def test_strict_yaml_overrides(refuse, task2_dataset, task2_tiny_config, tmp_path, override, words):
    out = tmp_path / "run"
    line = refuse(_t2_train(), ["--config", task2_tiny_config, "--data", task2_dataset, "--out", out, override],
                  names=[override.split("=")[0]], watch=[out])
    assert words in line


def test_config_that_is_a_fifo_is_refused(refuse, task2_dataset, tmp_path):
    import os

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    refuse(_t2_train(), ["--config", fifo, "--data", task2_dataset, "--out", tmp_path / "run"], names=["config.yaml"],
           watch=[tmp_path / "run"])


# --------------------------------------------------------------------------- a checkpoint's stored config
STORED_CASES = {  # name -> function(config) -> config
    "empty": lambda c: {},
    "no_model": lambda c: {k: v for k, v in c.items() if k != "model"},
    "model_not_a_mapping": lambda c: {**c, "model": "linear"},
    "unknown_key": lambda c: {**c, "bogus": 1},
    "bad_normalize": lambda c: {**c, "data": {**c["data"], "normalize": "bogus"}},
    "bad_seed": lambda c: {**c, "train": {**c["train"], "seed": -1}},
}
TASK2_STORED = {**STORED_CASES, "target_foo": lambda c: {**c, "target": "foo"},
                "bad_model_option": lambda c: {**c, "model": {**c["model"], "n_taps": 0}}}
SE_STORED = {**STORED_CASES, "bad_band": lambda c: {**c, "data": {**c["data"], "band": [10, 10.0000001]}},
             "bad_model_option": lambda c: {**c, "model": {**c["model"], "N": -3}}}


def _with_config(good: Path, folder: Path, change) -> Path:
    """A copy of checkpoint ``good`` at folder/best.pt whose stored config is ``change(config)``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = torch.load(good, weights_only=True)
    state["config"] = change(state["config"])
    torch.save(state, folder / "best.pt")
    return folder / "best.pt"


@pytest.fixture(scope="module")
def task2_stored_runs(task2_tiny_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stored_task2")
    runs = {}
    for name, change in TASK2_STORED.items():
        run = root / name
        shutil.copytree(task2_tiny_run, run)
        _with_config(task2_tiny_run / "best.pt", run, change)
        runs[name] = run
    return runs


@pytest.fixture(scope="module")
def se_stored_checkpoints(tiny_se_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stored_se")
    return {name: _with_config(tiny_se_run / "best.pt", root / name, change) for name, change in SE_STORED.items()}


@pytest.mark.parametrize("case", list(TASK2_STORED))
def test_task2_predict_validates_the_stored_config(refuse, task2_stored_runs, task2_dataset, tmp_path, case):
    from task2_regression.predict import main

    run, out = task2_stored_runs[case], tmp_path / "pred"
    line = refuse(main, ["--run", run, "--test-set", task2_dataset / "test_set" / "TASK2_regression", "--out", out],
                  names=["best.pt"], watch=[out, run])
    assert "stored config" in line


@pytest.mark.parametrize("case", list(TASK2_STORED))
def test_task2_evaluate_validates_the_stored_config(refuse, task2_stored_runs, task2_dataset, tmp_path, case):
    from task2_regression.evaluate import main

    run, out = task2_stored_runs[case], tmp_path / "within.json"
    line = refuse(main, ["--run", run, "--data", task2_dataset, "--segment-s", "5", "--out", out],
                  names=["best.pt"], watch=[out, run])
    assert "stored config" in line


@pytest.mark.parametrize("case", list(SE_STORED))
def test_se_predict_validates_the_stored_config(refuse, se_stored_checkpoints, tmp_path, case):
    import numpy as np
    import scipy.io.wavfile

    from speaker_extraction.predict import main

    wav, npy = tmp_path / "mix.wav", tmp_path / "eeg.npy"
    t = np.arange(16000) / 8000
    scipy.io.wavfile.write(wav, 8000, (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32))
    np.save(npy, np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32))
    ckpt = se_stored_checkpoints[case]
    line = refuse(main, ["--run", ckpt, "--mixture", wav, "--eeg", npy, "--out", tmp_path / "out.wav"],
                  names=["best.pt"], watch=[tmp_path, ckpt])
    assert "stored config" in line


@pytest.mark.parametrize("case", list(SE_STORED))
def test_se_evaluate_validates_the_stored_config(refuse, se_stored_checkpoints, kul_dataset, tmp_path, case):
    from speaker_extraction.evaluate import main

    ckpt = se_stored_checkpoints[case]
    line = refuse(main, ["--run", ckpt, "--data", kul_dataset, "--no-aad", "--no-progress",
                         "--out", tmp_path / "report.json"], names=["best.pt"], watch=[tmp_path, ckpt])
    assert "stored config" in line


def test_a_stored_config_missing_keys_added_since_still_loads(task2_tiny_run, tmp_path):
    """Keys a newer kit added are filled from the defaults (old runs keep working); only bad values are refused."""
    from task2_regression.predict import load_run_model

    run = tmp_path / "run"
    shutil.copytree(task2_tiny_run, run)
    _with_config(task2_tiny_run / "best.pt", run, lambda c: {**c, "train": {k: v for k, v in c["train"].items()
                                                                             if k != "precision"}})
    model, cfg = load_run_model(run)
    assert cfg["train"]["precision"] == "fp32" and cfg["model"]["type"] == "linear"


# --------------------------------------------------------------------------- flags
def _task2_predict_argv(task2_tiny_run, task2_dataset, out):
    return ["--run", task2_tiny_run, "--test-set", task2_dataset / "test_set" / "TASK2_regression", "--out", out,
            "--control", "noise"]


FLAG_CASES = [  # (cli, flags, flag named)
    ("task2_predict", ["--seed", "-1"], "--seed"),
    ("task2_predict", ["--seed", "4294967296"], "--seed"),
    ("task2_predict", ["--seed", "1e3"], "--seed"),
    ("task2_evaluate", ["--seed", "-1"], "--seed"),
    ("task2_evaluate", ["--n-shifts", "1000000000"], "--n-shifts"),
    ("task2_evaluate", ["--n-shifts", "1e9"], "--n-shifts"),
    ("task2_evaluate", ["--n-shifts", "0"], "--n-shifts"),
    ("task2_heldout", ["--seed", "-1"], "--seed"),
    ("task2_heldout", ["--n-shifts", "1000000000"], "--n-shifts"),
    ("se_evaluate", ["--seed", "-1"], "--seed"),
    ("se_evaluate", ["--seed", "99999999999999999999"], "--seed"),
    ("evaluation_task2", ["--n-shifts", "1000000000"], "--n-shifts"),
    ("synthetic_task2", ["--snr-db", "1e308"], "--snr-db"),
    ("synthetic_task2", ["--snr-db", "nan"], "--snr-db"),
    ("synthetic_task2", ["--seed", "-1"], "--seed"),
    ("synthetic_kul", ["--seed", "-1"], "--seed"),
    ("aad", ["--seed", "-1"], "--seed"),
    ("aad", ["--n-shifts", "1000000000"], "--n-shifts"),
    ("task2_paper_tables", ["--epochs-scale", "nan"], "--epochs-scale"),
    ("task2_paper_tables", ["--epochs-scale", "-1"], "--epochs-scale"),
    ("task2_paper_tables", ["--epochs-scale", "0"], "--epochs-scale"),
    ("task2_paper_tables", ["--rows", ""], "--rows"),
    ("task2_paper_tables", ["--rows", ",,"], "--rows"),
    ("task2_paper_tables", ["--threads", "0"], "--threads"),
    ("task2_paper_tables", ["--n-shifts", "1000000000"], "--n-shifts"),
    ("se_paper_tables", ["--threads", "-1"], "--threads"),
    ("se_paper_tables", ["--epochs", "0"], "--epochs"),
]


def _flag_cli(cli, task2_tiny_run, task2_dataset, kul_dataset, tmp_path):
    """(main, base argv, watched paths) of one CLI."""
    import importlib

    out = tmp_path / "out"
    if cli == "task2_predict":
        return importlib.import_module("task2_regression.predict").main, \
            _task2_predict_argv(task2_tiny_run, task2_dataset, out), [out, task2_tiny_run]
    if cli == "task2_evaluate":
        return importlib.import_module("task2_regression.evaluate").main, \
            ["--run", task2_tiny_run, "--data", task2_dataset, "--segment-s", "5", "--out", out / "r.json"], \
            [out, task2_tiny_run]
    if cli == "task2_heldout":
        return importlib.import_module("task2_regression.evaluate").main, \
            ["--heldout", "--run", task2_tiny_run, "--data", task2_dataset, "--out", out / "r.json"], \
            [out, task2_tiny_run]
    if cli == "se_evaluate":
        return importlib.import_module("speaker_extraction.evaluate").main, \
            ["--run", tmp_path / "none.pt", "--data", kul_dataset, "--out", out / "r.json"], [out]
    if cli == "evaluation_task2":
        labels = task2_dataset / "test_set" / "labels"
        return importlib.import_module("evaluation.task2").main, \
            ["--predictions", tmp_path / "pred", "--labels", labels, "--out", out / "r.json"], [out, labels]
    if cli == "synthetic_task2":
        return importlib.import_module("synthetic").main, ["task2", "--out", out], [out]
    if cli == "synthetic_kul":
        return importlib.import_module("synthetic").main, ["kul", "--out", out], [out]
    if cli == "aad":
        return importlib.import_module("speaker_extraction.experiments.aad").main, \
            ["--data", kul_dataset, "--model", "ridge", "--out", out], [out]
    if cli == "task2_paper_tables":
        return importlib.import_module("task2_regression.experiments.paper_tables").main, \
            ["--data", task2_dataset, "--out", out], [out, task2_dataset]
    if cli == "se_paper_tables":
        return importlib.import_module("speaker_extraction.experiments.paper_tables").main, \
            ["--data", kul_dataset, "--out", out], [out]
    raise AssertionError(cli)


@pytest.mark.parametrize("cli,flags,flag", FLAG_CASES, ids=[f"{c}:{' '.join(f)}" for c, f, _ in FLAG_CASES])
def test_flags_are_typed_and_bounded(refuse, task2_tiny_run, task2_dataset, kul_dataset, tmp_path, cli, flags, flag):
    main, argv, watch = _flag_cli(cli, task2_tiny_run, task2_dataset, kul_dataset, tmp_path)
    refuse(main, [*argv, *flags], names=[flag], watch=watch)


def test_every_seed_flag_is_typed_by_seed_arg():
    """The class, not the cases: every ``--seed`` of every script is parsed by `util.config.seed_arg`."""
    offenders = []
    for path in REPO.rglob("*.py"):
        if "tests" in path.relative_to(REPO).parts:
            continue
        for match in re.finditer(r'add_argument\(\s*"--seed"[^)]*', path.read_text()):
            if "type=seed_arg" not in match.group(0):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)[:80]}")
    assert offenders == []


def test_flag_types_accept_the_range_and_name_the_bounds():
    import argparse

    from util.config import SEED_MAX, float_arg, int_arg, seed_arg

    assert seed_arg("0") == 0 and seed_arg(str(SEED_MAX)) == SEED_MAX and int_arg(1, 5)(" 3 ") == 3
    assert float_arg(0, 10, low_open=True)("2.5") == 2.5
    for parse, text in ((seed_arg, "-1"), (seed_arg, str(SEED_MAX + 1)), (seed_arg, "1" * 5000), (int_arg(1, 5), "2.0"),
                        (float_arg(0, 10, low_open=True), "0"), (float_arg(0, 10), "inf"), (float_arg(-1, 1), "nan")):
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            parse(text)
