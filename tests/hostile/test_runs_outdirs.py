"""The --out rule on demo.py, submit.py, synthetic, evaluation.task2 and the experiments (util.outdir)."""
from __future__ import annotations

from pathlib import Path

import pytest


def _foreign(tmp_path: Path) -> Path:
    out = tmp_path / "work"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    return out


def test_demo_fresh_never_deletes_a_folder_without_the_marker(refuse, tmp_path):
    import demo

    out = _foreign(tmp_path)
    line = refuse(demo.main, ["--out", out, "--fresh"], names=["--out"], watch=[tmp_path])
    assert "nothing was deleted" in line


@pytest.mark.parametrize("case,argv,names", [
    ("out_not_empty", [], ["--out"]),
    ("out_is_a_file", ["FILE"], ["--out"]),
    ("epochs_negative", ["--epochs", "-3"], ["--epochs"]),
    ("minutes_nan", ["--minutes", "nan"], ["--minutes"]),
    ("subjects_zero", ["--subjects", "0"], ["--subjects"]),
    ("seed_negative", ["--seed", "-1"], ["--seed"]),
])
def test_demo_refuses(refuse, tmp_path, case, argv, names):
    import demo

    out = _foreign(tmp_path)
    if argv == ["FILE"]:
        out, argv = out / "thesis.tex", []
    refuse(demo.main, ["--out", out, *argv], names=names, watch=[tmp_path])


def test_submit_refuses_a_foreign_non_empty_out(refuse, task2_tiny_run, task2_dataset, tmp_path):
    import submit

    out = _foreign(tmp_path)
    refuse(submit.main, ["--task", "2", "--predictions", tmp_path / "pred", "--test-set",
                         task2_dataset / "test_set" / "TASK2_regression", "--group", "g", "--out", out],
           names=["--out"], watch=[tmp_path])


def test_submit_refuses_out_equal_to_predictions(refuse, task2_dataset, tmp_path):
    import submit

    pred = _foreign(tmp_path)
    refuse(submit.main, ["--task", "2", "--predictions", pred, "--test-set",
                         task2_dataset / "test_set" / "TASK2_regression", "--group", "g", "--out", pred,
                         "--overwrite"], names=["--out"], watch=[tmp_path])


@pytest.mark.parametrize("dataset", ["task2", "kul"])
def test_synthetic_refuses_a_non_empty_out(refuse, tmp_path, dataset):
    import synthetic

    out = _foreign(tmp_path)
    refuse(synthetic.main, [dataset, "--out", out], names=["--out"], watch=[tmp_path])


@pytest.mark.parametrize("flag", ["--out", "--plot"])
def test_evaluation_task2_refuses_an_existing_report(refuse, task2_dataset, tmp_path, flag):
    from evaluation.task2 import main

    target = tmp_path / ("report.json" if flag == "--out" else "report.png")
    target.write_text("an older report")
    refuse(main, ["--predictions", tmp_path, "--labels", task2_dataset / "test_set" / "labels", flag, target],
           names=[flag], watch=[tmp_path])


def test_task2_paper_tables_refuse_a_non_empty_out(refuse, task2_dataset, tmp_path):
    from task2_regression.experiments.paper_tables import main

    out = _foreign(tmp_path)
    refuse(main, ["--data", task2_dataset, "--out", out, "--quick"], names=["--out"], watch=[tmp_path])


@pytest.mark.parametrize("argv,names", [([], ["--out"]), (["--threads", "-1", "--overwrite"], ["--threads"])])
def test_se_paper_tables_refuse(refuse, kul_dataset, tmp_path, argv, names):
    from speaker_extraction.experiments.paper_tables import main

    out = _foreign(tmp_path)
    refuse(main, ["--data", kul_dataset, "--out", out, "--quick", *argv], names=names, watch=[tmp_path])


def test_aad_experiment_refuses_a_non_empty_out(refuse, kul_dataset, tmp_path):
    from speaker_extraction.experiments.aad import main

    out = _foreign(tmp_path)
    refuse(main, ["--data", kul_dataset, "--model", "ridge", "--out", out], names=["--out"], watch=[tmp_path])


def test_stale_temporaries_are_removed_on_the_next_start(tmp_path):
    from util.outdir import prepare_out_dir

    from util.atomic import temp_name

    out = tmp_path / "run"
    out.mkdir()
    dead = 2**22 + 1  # above Linux's PID_MAX_LIMIT: no such process, as after a kill
    (out / temp_name("last.pt", ".pt", pid=dead)).write_bytes(b"half")
    (out / temp_name("task_2_group_g_submission_1.zip", ".zip", pid=dead)).write_bytes(b"half")
    (out / "keep.tmp-not-ours").write_text("user file")
    (out / ".keep.tmp-thesis").write_text("user file that looks like an old-style temporary")
    prepare_out_dir(out)
    assert sorted(p.name for p in out.iterdir()) == [".eegkit-output", ".keep.tmp-thesis", "keep.tmp-not-ours"]


REPORT_FILE_CASES = [
    ("task2_regression.evaluate", ["--run", "RUN", "--data", "DATA", "--plot", "OLD"], "--plot"),
    ("task2_regression.evaluate", ["--run", "RUN", "--data", "DATA", "--out", "OLD"], "--out"),
    ("task2_regression.evaluate", ["--heldout", "--run", "RUN", "--data", "DATA", "--out", "OLD"], "--out"),
    ("task2_regression.evaluate", ["--heldout", "--run", "RUN", "--data", "DATA", "--plot", "OLD"], "--plot"),
    ("task2_regression.evaluate", ["--heldout", "--run", "RUN", "--data", "DATA", "--out", "NEW", "--plot", "NEW"],
     "--plot"),
    ("benchmarks.task2_excerpt", ["--data", "DATA", "--out", "OLD"], "--out"),
    ("benchmarks.task2_excerpt", ["--data", "DATA", "--plot", "OLD"], "--plot"),
]


@pytest.mark.parametrize("module, argv, flag", REPORT_FILE_CASES,
                         ids=[f"{m}:{' '.join(a[:1] + a[-2:])}" for m, a, _ in REPORT_FILE_CASES])
def test_report_files_are_never_overwritten_unasked(module, argv, flag, refuse, tmp_path):
    """An existing --out/--plot file is refused without --overwrite (and --plot may not be --out), before any work."""
    import importlib

    old = tmp_path / "old.png"
    old.write_bytes(b"a figure someone kept")
    names = {"RUN": tmp_path / "run", "DATA": tmp_path / "data", "OLD": old, "NEW": tmp_path / "new.json"}
    refuse(importlib.import_module(module).main, [names.get(a, a) for a in argv], names=[flag], watch=[tmp_path])
