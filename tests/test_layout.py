"""The import direction of the kit: every module imports only from its own layer or the ones below.

Layers (util.layers): util < evaluation < tasks (task2_regression, speaker_extraction; neither
imports the other) < synthetic, benchmarks, task experiments, demo.py, submit.py, docs/.
"""
from __future__ import annotations

from pathlib import Path

from util import layers

REPO = Path(__file__).resolve().parents[1]


def test_imports_only_point_down():
    assert layers.violations(REPO) == []


def test_every_kit_module_has_a_layer_and_is_parsed():
    modules = layers.kit_modules(REPO)
    assert {"util.trainer", "util.config", "evaluation.task2", "task2_regression.train", "speaker_extraction.evaluate",
            "synthetic.kul", "demo", "submit"} <= set(modules)
    for module in modules:
        layers.layer_of(module)  # KeyError for a folder outside the layer table
    # the graph is real: the known downward edges are found
    graph = layers.import_graph(REPO)
    assert ("task2_regression", "util") in graph and ("synthetic", "speaker_extraction") in graph
    assert ("speaker_extraction", "evaluation") in graph


def test_checker_catches_an_upward_import(tmp_path):
    (tmp_path / "util").mkdir()
    (tmp_path / "util" / "__init__.py").write_text("")
    (tmp_path / "util" / "bad.py").write_text("def f():\n    from task2_regression import train\n")
    (tmp_path / "task2_regression").mkdir()
    (tmp_path / "task2_regression" / "__init__.py").write_text("")
    (tmp_path / "task2_regression" / "train.py").write_text("from ..speaker_extraction import data\n")
    (tmp_path / "speaker_extraction").mkdir()
    (tmp_path / "speaker_extraction" / "__init__.py").write_text("")
    (tmp_path / "speaker_extraction" / "data.py").write_text("")
    found = layers.violations(tmp_path)
    assert found == ["task2_regression/train.py:1 task2_regression -> speaker_extraction",
                     "util/bad.py:2 util -> task2_regression"]


def test_no_import_cycles_between_modules(tmp_path):
    assert layers.module_cycles(REPO) == []  # e.g. task2_regression.data <-> stimulus_targets once was one
    (tmp_path / "util").mkdir()
    (tmp_path / "util" / "a.py").write_text("from util import b\n")
    (tmp_path / "util" / "b.py").write_text("def f():\n    import util.a\n")
    assert layers.module_cycles(tmp_path) == [["util.a", "util.b", "util.a"]]
