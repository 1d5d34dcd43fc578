"""The published CAT-guided WaveNet (`cat_wavenet_published`), its checkpoint import and predict's array mode.

- golden equality: the authors' small checkpoint (../shared/reference/golden, skipped where absent) through
  `task2_regression.import_checkpoint` and `predict --arrays` gives the authors' four outputs to 1e-4 of each
  output's std;
- the paper-size model has the authors' 3,034 state-dict keys with their shapes, in their order, and
  93,991,284 parameters (92,474,356 read by the forward);
- the importer takes the authors' training layout, a bare state dict and a ``module.``-prefixed one alike;
- the fast depthwise / per-tap convs equal ``nn.Conv1d``; the GEMM conv path equals the native one;
- an imported checkpoint goes the whole way on the synthetic data: predict on the official test-set format,
  submit.py, evaluation.task2 with its noise-EEG, mismatched-EEG and circular-shift controls.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "reference" / "golden"
OUTPUTS = ("envelope", "mel", "mel80", "mag")
TINY = {"residual_channels": 4, "last_stage_channels": 8, "layers": 2, "dilation_cycle": 12}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (2 threads thrash on a shared, loaded 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def golden(name: str) -> Path:
    path = GOLDEN / name
    if not path.is_file():
        pytest.skip(f"golden file not present at {path}")
    return path


def build(**sizes):
    from task2_regression.models.cat_wavenet_published import STAGES, CATWaveNetPublished

    return CATWaveNetPublished(dict(STAGES), **sizes)


def random_state(seed: int = 0, **sizes) -> dict[str, torch.Tensor]:
    """A state dict of the published model with every tensor (gains, biases, norms) drawn at random."""
    torch.manual_seed(seed)
    model = build(**sizes)
    generator = torch.Generator().manual_seed(seed + 1)
    return {key: 0.3 * torch.randn(value.shape, generator=generator) for key, value in model.state_dict().items()}


def write_mtwave(path: Path, state: dict, layout: str = "training") -> Path:
    """``state`` as the authors' code writes it: training layout, bare (their average) or DataParallel-prefixed."""
    if layout == "training":
        obj = {"epoch": 40, "state_dict": state, "optimizer": None, "learning_rate": 5e-4}
    elif layout == "bare":
        obj = dict(state)
    else:
        obj = {f"module.{key}": value for key, value in state.items()}
    torch.save(obj, path)
    return path


def run_main(main, argv) -> None:
    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny MTWAVE-layout checkpoint with random weights (res 4, 2 blocks, mag stage 8)."""
    return write_mtwave(tmp_path_factory.mktemp("mtwave") / "checkpoint_40", random_state(0, **TINY))


@pytest.fixture(scope="module")
def tiny_run(tiny_checkpoint, tmp_path_factory) -> Path:
    from task2_regression import import_checkpoint

    run = tmp_path_factory.mktemp("imported") / "run"
    run_main(import_checkpoint.main, ["--from", "mtwave", "--checkpoint", tiny_checkpoint, "--out", run])
    return run


# --------------------------------------------------------------------------- golden equality
def test_golden_outputs_through_import_and_predict_arrays(tmp_path, capsys):
    """The authors' small checkpoint -> import_checkpoint -> predict --arrays == their outputs (fp32)."""
    from task2_regression import import_checkpoint, predict

    checkpoint, io = golden("mtwave_small_checkpoint_40"), golden("mtwave_small_io.npz")
    run, out = tmp_path / "run", tmp_path / "out.npz"
    run_main(import_checkpoint.main, ["--from", "mtwave", "--checkpoint", checkpoint, "--out", run])
    printed = capsys.readouterr().out
    assert "8,165,396 parameters" in printed and "unused parameters" in printed
    record = json.loads((run / "import.json").read_text())
    assert record["sizes"] == {"residual_channels": 16, "skip_channels": 16, "last_stage_channels": 512,
                               "layers": 2, "dilation_cycle": 12}
    assert record["parameters"] == json.loads(golden("mtwave_small.json").read_text())["parameters"] == 8_165_396
    run_main(predict.main, ["--run", run, "--arrays", io, "--out", out])
    with np.load(io) as reference, np.load(out) as predicted:
        assert sorted(predicted.files) == sorted(OUTPUTS)
        for name in OUTPUTS:
            assert predicted[name].shape == reference[name].shape, name
            error = np.abs(predicted[name] - reference[name]).max() / reference[name].std()
            assert error <= 1e-4, f"{name}: max |err| / std = {error:.2e}"


# --------------------------------------------------------------------------- keys and counts
def paper_keys() -> list[tuple[str, tuple[int, ...]]]:
    rows = golden("mtwave_paper_state_dict_keys.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["key", "shape"]
    return [(key, tuple(int(n) for n in shape.split(",")) if shape else ())
            for key, shape in (row.split("\t") for row in rows[1:])]


def paper_model():
    from task2_regression.models import build_model
    from util import config as config_util
    from util.features import BANDS

    config = config_util.load_config(REPO / "task2_regression" / "configs" / "cat_wavenet_published.yaml")
    with torch.device("meta"):  # shapes only: no 94 M parameters allocated
        return build_model(config["model"], {name: BANDS[name] for name in config["targets"]})


def test_paper_size_keys_shapes_and_count():
    model = paper_model()
    assert [(key, tuple(v.shape)) for key, v in model.state_dict().items()] == paper_keys()  # 3,034, in order
    assert model.parameter_counts() == {"all": 93_991_284, "unused": 1_516_928, "used": 92_474_356}


def test_counts_without_the_golden_files():
    """The unused parameters, counted by hand: proj1 R*R+R per regressor, skip_out 64*128+64 per DepthConv1d
    (3 per attention x 4 attentions x 3 blocks x 3 stages), last res_conv R*R+2R per regressor."""
    with torch.device("meta"):
        paper, small = build(), build(residual_channels=16, layers=2, dilation_cycle=2)
    unused = 3 * (128 * 128 + 128) + (512 * 512 + 512) + 108 * (64 * 128 + 64) + 3 * (128 * 128 + 256) + (512 * 512 + 1024)
    assert paper.parameter_counts()["unused"] == unused == 1_516_928
    assert paper.parameter_counts()["all"] == 93_991_284
    assert small.parameter_counts()["all"] == 8_165_396  # the golden small model (mtwave_small.json)
    frozen = {name for name, p in paper.named_parameters() if not p.requires_grad}
    assert "block3.Fast1.residual_layer.residual_blocks.35.res_conv.weight_v" in frozen
    assert "block3.Fast1.residual_layer.residual_blocks.34.res_conv.weight_v" not in frozen
    assert "eeg2envblock.proj1.weight" in frozen and "block1.proj1.weight" not in frozen  # the stage proj1 is used


def test_unused_parameters_are_really_unused():
    """Changing every declared-unused tensor leaves the outputs bit-identical; they get no gradient."""
    torch.manual_seed(0)
    model = build(**TINY).eval()
    eeg = torch.randn(1, 1920, 64)
    with torch.no_grad():
        before = model(eeg)
        for parameter in model.parameters():
            if not parameter.requires_grad:
                parameter.add_(1.0)
        after = model(eeg)
    for name in OUTPUTS:
        assert torch.equal(before[name], after[name]), name
    model.train()
    sum(out.sum() for out in model(eeg).values()).backward()
    assert all((p.grad is None) != p.requires_grad for p in model.parameters())


def test_kit_cat_wavenet_count_beside_it():
    """The kit's own variant (cat_wavenet.yaml) stays the default with its own count."""
    from task2_regression.models import build_model
    from util import config as config_util
    from util.features import BANDS

    config = config_util.load_config(REPO / "task2_regression" / "configs" / "cat_wavenet.yaml")
    with torch.device("meta"):
        model = build_model(config["model"], {name: BANDS[name] for name in config["targets"]})
    assert config["model"]["type"] == "cat_wavenet"
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(model) == 90_468_664
    # the gap as the cat_wavenet.py docstring states it: WaveNet bookkeeping, then the attention
    with torch.device("meta"):
        published = build()
    wavenets = sum(count(r) for r in published.regressors()) - sum(count(s) for s in model.stages)
    assert wavenets == 625_280 - 348  # unused proj1 + last res_conv there; weight-normed output conv here
    attention = count(published) - sum(count(r) for r in published.regressors()) - count(model.attention)
    assert attention == 2_897_688
    assert count(published) - count(model) == 93_991_284 - 90_468_664


# --------------------------------------------------------------------------- forward pieces
def test_fast_convs_equal_torch_conv1d():
    from task2_regression.models.published_blocks import conv_same, depthwise_same

    torch.manual_seed(0)
    x = torch.randn(2, 128, 50)
    for kernel in (1, 3, 5):
        depthwise = torch.nn.Conv1d(128, 128, kernel, padding=kernel // 2, groups=128)
        torch.testing.assert_close(depthwise_same(x, depthwise), depthwise(x), rtol=1e-5, atol=1e-6)
        dense = torch.nn.Conv1d(128, 64, kernel, padding=kernel // 2)
        torch.testing.assert_close(conv_same(x, dense), dense(x), rtol=1e-5, atol=1e-5)


def test_gemm_conv_path_equals_native():
    torch.manual_seed(0)
    model = build(**TINY)
    model.load_state_dict(random_state(3, **TINY))
    model.eval()
    eeg = torch.randn(1, 1920, 64)
    with torch.no_grad():
        model.set_conv_impl("native")
        native = model(eeg)
        model.set_conv_impl("gemm")
        gemm = model(eeg)
    for name in OUTPUTS:
        torch.testing.assert_close(gemm[name], native[name], rtol=1e-4, atol=1e-5 * float(native[name].std()))


def test_other_window_lengths_are_refused_in_one_line():
    from util.errors import EEGKitError

    model = build(**TINY)
    with pytest.raises(EEGKitError, match="1920 frames.*got 640 frames"):
        model(torch.zeros(1, 640, 64))
    with pytest.raises(EEGKitError, match=r"\(batch, 1920, 64\)"):
        model(torch.zeros(1, 1920, 32))


def test_targets_must_be_the_four_stages():
    from task2_regression.models import build_model
    from util.errors import EEGKitError

    with pytest.raises(EEGKitError, match="four published stages"):
        build_model({"type": "cat_wavenet_published", **TINY}, {"envelope": 1, "mel": 10})


# --------------------------------------------------------------------------- import layouts
def test_importer_accepts_the_three_layouts(tmp_path):
    """Training layout, bare and module.-prefixed files give the same state dict and the same run weights."""
    from task2_regression import import_checkpoint
    from util.checkpoint_import import read_state_dict
    from util.training import load_checkpoint

    state = random_state(5, **TINY)
    weights = {}
    for layout in ("training", "bare", "module"):
        path = write_mtwave(tmp_path / f"{layout}.pt", state, layout)
        read = read_state_dict(path)
        assert list(read) == list(state) and all(torch.equal(read[k], state[k]) for k in state), layout
        run_main(import_checkpoint.main, ["--from", "mtwave", "--checkpoint", path, "--out", tmp_path / layout])
        weights[layout] = load_checkpoint(tmp_path / layout / "best.pt", task="task2")["model"]
    for layout in ("bare", "module"):
        assert all(torch.equal(weights[layout][k], weights["training"][k]) for k in state)
    assert all(torch.equal(weights["training"][k], state[k]) for k in state)


def test_imported_run_folder(tiny_run, tiny_checkpoint):
    from task2_regression.predict import load_run_model
    from util.training import load_checkpoint

    assert {p.name for p in tiny_run.iterdir()} >= {"best.pt", "config.yaml", "import.json"}
    state = load_checkpoint(tiny_run / "best.pt", task="task2", model_type="cat_wavenet_published")
    cfg = state["config"]
    assert cfg["targets"] == list(OUTPUTS) and cfg["target"] == "mel"
    assert cfg["model"]["residual_channels"] == 4 and cfg["model"]["last_stage_channels"] == 8
    assert cfg["train"]["precision"] == "fp32" and cfg["data"]["window_s"] == 30.0
    model, _ = load_run_model(tiny_run)
    assert not model.training
    record = json.loads((tiny_run / "import.json").read_text())
    assert record["checkpoint"] == str(tiny_checkpoint.resolve()) and len(record["sha256"]) == 64


def test_predict_arrays_writes_every_output(tiny_run, tiny_checkpoint, tmp_path):
    """--arrays: the eeg entry as is -> one (batch, time, bands) array per target, equal to the model's."""
    from task2_regression import predict

    eeg = np.random.default_rng(0).standard_normal((3, 1920, 64)).astype(np.float32)
    np.savez(tmp_path / "in.npz", eeg=eeg)
    run_main(predict.main, ["--run", tiny_run, "--arrays", tmp_path / "in.npz", "--out", tmp_path / "out.npz"])
    model = build(**TINY).eval()
    model.load_state_dict(torch.load(tiny_checkpoint, weights_only=True)["state_dict"])
    with torch.no_grad():
        expected = model(torch.from_numpy(eeg))
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out.files) == sorted(OUTPUTS)
        for name in OUTPUTS:
            assert out[name].dtype == np.float32 and out[name].shape == (3, 1920, len(expected[name][0, 0]))
            np.testing.assert_allclose(out[name], expected[name].numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the full path
def test_imported_checkpoint_full_path(tiny_run, task2_dataset, tmp_path, capsys):
    """import -> predict (official test-set format; real, noise and mismatched EEG) -> submit.py -> evaluation.task2."""
    import submit
    from evaluation import task2 as evaluation_task2
    from task2_regression import predict

    test_dir = task2_dataset / "test_set" / "TASK2_regression"
    labels = task2_dataset / "test_set" / "labels"
    folders = {}
    for control in ("none", "noise", "mismatched"):
        folders[control] = tmp_path / f"pred_{control}"
        run_main(predict.main, ["--run", tiny_run, "--test-set", test_dir, "--out", folders[control],
                                "--control", control])
    first = json.loads(next(folders["none"].glob("sub-*.json")).read_text())
    assert all(np.asarray(v).shape == (1920, 10) for v in first.values())
    run_main(submit.main, ["--task", "2", "--predictions", folders["none"], "--test-set", test_dir,
                           "--group", "published", "--out", tmp_path / "zip"])
    zip_path = tmp_path / "zip" / "task_2_group_published_submission_1.zip"
    assert zip_path.is_file()
    report_path = tmp_path / "report.json"
    run_main(evaluation_task2.main, ["--predictions", zip_path, "--labels", labels, "--out", report_path,
                                     "--noise-predictions", folders["noise"],
                                     "--mismatched-predictions", folders["mismatched"], "--n-shifts", "20"])
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["n_missing"] == 0 and -1.0 < report["score"] < 1.0
    controls = report["controls"]
    assert {"noise_eeg", "mismatched_eeg", "circular_shift"} <= set(controls)
    assert controls["noise_eeg"]["score"] is not None and controls["mismatched_eeg"]["score"] is not None
    assert "noise" in printed.lower()
