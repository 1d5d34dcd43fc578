"""The published NeuroSpex (`neurospex_published`): the authors' function, keys and sizes; import and array mode.

- golden equality: ``golden/neurospex_small_state_dict.pt`` through ``import_checkpoint`` then
  ``predict --arrays`` on ``golden/neurospex_small_io.npz`` (max |err| / std(estimate) <= 1e-4);
- the paper-size model's keys and shapes equal ``golden/neurospex_paper_state_dict_keys.tsv``, in order;
  5,059,448 parameters (paper), 642,400 (golden small);
- the importer reads the authors' three layouts and infers every size; array mode equals the model;
- the kit's train.py runs on the published model (4-s windows) and refuses other windows in one line;
- the full path on an imported checkpoint: import -> ``speaker_extraction.evaluate`` with its controls.

Tests on ``../shared/reference/golden`` skip cleanly where that folder is absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "reference" / "golden"
CONFIGS = REPO / "speaker_extraction" / "configs"

# a tiny model of the authors' architecture: every size differs from the others, so a swapped size shows
TINY_SIZES = {"N": 16, "L": 20, "B": 12, "H": 24, "P": 3, "X": 2, "R": 3, "adc_blocks": 2}


@pytest.fixture(scope="module")
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference files not present at {GOLDEN}")
    return GOLDEN


def tiny_authors_state(seed: int = 0, sizes: dict | None = None) -> dict[str, torch.Tensor]:
    """A state dict in the authors' key layout (the kit's published model is key-identical), every tensor
    random (gains and biases too, so a wrong mapping changes the output)."""
    from speaker_extraction.models.neurospex_published import NeuroSpexPublished

    torch.manual_seed(seed)
    model = NeuroSpexPublished(**(sizes or TINY_SIZES))
    generator = torch.Generator().manual_seed(seed + 1)
    return {key: torch.randn(value.shape, generator=generator) * (0.5 if value.dim() > 1 else 0.1)
            + (1.0 if "norm" in key and key.endswith(".weight") else 0.0)  # LayerNorm gains near 1
            for key, value in model.state_dict().items()}


def write_authors_checkpoint(path: Path, layout: str = "training", seed: int = 0) -> dict[str, torch.Tensor]:
    """Save `tiny_authors_state` the way the authors' scripts do: ``training`` ({'epoch', 'state_dict', 'optimizer',
    'learning_rate'}), ``bare`` (a state dict) or ``module`` (DataParallel's prefix); returns the state."""
    state = tiny_authors_state(seed)
    if layout == "training":
        torch.save({"epoch": 7, "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                    "learning_rate": 1e-4}, path)
    elif layout == "bare":
        torch.save(state, path)
    elif layout == "module":
        torch.save({f"module.{key}": value for key, value in state.items()}, path)
    else:
        raise ValueError(layout)
    return state


def _count(config_name: str) -> int:
    from speaker_extraction.models import build_model
    from speaker_extraction.train import resolve_config
    from util.config import load_config
    from util.training import count_parameters

    config = resolve_config(load_config(CONFIGS / config_name))
    return count_parameters(build_model(config["model"]), trainable_only=False)


def test_parameter_counts_of_the_published_configs():
    assert _count("neurospex_published.yaml") == 5_059_448
    assert _count("neurospex_published_small.yaml") == 642_400


def test_paper_size_keys_and_shapes_equal_the_authors(golden):
    from speaker_extraction.models import build_model
    from speaker_extraction.train import resolve_config
    from util.config import load_config

    rows = [line.split("\t") for line in (golden / "neurospex_paper_state_dict_keys.tsv").read_text().splitlines()]
    assert rows[0] == ["key", "shape"]
    expected = [(key, tuple(int(n) for n in shape.split(","))) for key, shape in rows[1:]]
    model = build_model(resolve_config(load_config(CONFIGS / "neurospex_published.yaml"))["model"])
    assert [(key, tuple(value.shape)) for key, value in model.state_dict().items()] == expected
    assert len(expected) == 284


def test_golden_estimate_through_import_and_array_mode(golden, tmp_path, capsys):
    """The authors' estimate from their seeded small model, through the two CLIs (fp32)."""
    from speaker_extraction.import_checkpoint import main as import_main
    from speaker_extraction.predict import main as predict_main

    facts = json.loads((golden / "neurospex_small.json").read_text())
    run, out = tmp_path / "run", tmp_path / "estimate.npz"
    assert import_main(["--from", "neurospex", "--checkpoint", str(golden / "neurospex_small_state_dict.pt"),
                        "--out", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"{facts['parameters']:,} parameters" in printed and "unused parameters: none" in printed
    imported = json.loads((run / "import.json").read_text())
    assert imported["parameters"] == facts["parameters"] == 642_400
    assert {k: imported["model"][k] for k in facts["constructor"]} == facts["constructor"]
    assert imported["model"]["adc_blocks"] == facts["eeg_encoder_blocks"]
    assert predict_main(["--run", str(run), "--arrays", str(golden / "neurospex_small_io.npz"), "--out", str(out)]) == 0
    with np.load(golden / "neurospex_small_io.npz") as io, np.load(out) as got:
        reference, estimate = io["estimate"], got["estimate"]
    assert estimate.shape == reference.shape == (2, 32000) and estimate.dtype == np.float32
    error = float(np.abs(estimate - reference).max() / reference.std())
    assert error <= 1e-4, error


def test_forward_takes_four_second_windows_only():
    from speaker_extraction.models.neurospex_published import NeuroSpexPublished
    from util.errors import EEGKitError

    model = NeuroSpexPublished(**TINY_SIZES).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 32000), torch.randn(2, 512, 64)).shape == (2, 32000)
        for mixture, eeg in (((1, 16000), (1, 256, 64)), ((1, 32000), (1, 256, 64)), ((1, 32000), (1, 512, 32)),
                             ((2, 32000), (1, 512, 64))):
            with pytest.raises(EEGKitError) as info:
                model(torch.randn(*mixture), torch.randn(*eeg))
            message = str(info.value)
            assert "\n" not in message and "32000" in message and "512" in message and str(mixture) in message


def test_decoder_overlap_adds_and_pads_to_the_input_length():
    """Decoder by hand: frames of L samples every L/2 summed; the end zero-padded to S."""
    from speaker_extraction.models.neurospex_published import SpeechDecoder

    torch.manual_seed(0)
    decoder = SpeechDecoder(N=3, L=4)
    masked = torch.randn(1, 3, 5)  # (batch, N, K=5 frames)
    frames = decoder.basis_signals(masked.transpose(1, 2))[0]  # (5, 4)
    expected = torch.zeros(15)
    for k in range(5):
        expected[2 * k: 2 * k + 4] += frames[k]  # (K - 1) * 2 + 4 = 12 samples, then 3 zeros
    torch.testing.assert_close(decoder(masked, 15)[0], expected)


@pytest.mark.parametrize("layout", ["training", "bare", "module"])
def test_import_reads_each_layout_and_infers_the_sizes(tmp_path, layout):
    from speaker_extraction.import_checkpoint import import_neurospex
    from util.training import load_checkpoint

    source = tmp_path / f"{layout}.pt"
    state = write_authors_checkpoint(source, layout)
    result = import_neurospex(source, tmp_path / "run")
    assert {k: result["model"][k] for k in TINY_SIZES} == TINY_SIZES
    assert result["model"]["eeg_frames"] == 512 and result["model"]["samples"] == 32000
    assert result["unused"] == [] and result["tensors"] == len(state)
    saved = load_checkpoint(tmp_path / "run" / "best.pt", task="speaker_extraction", model_type="neurospex_published")
    assert list(saved["model"]) == list(state)
    for key, value in state.items():
        assert torch.equal(saved["model"][key], value), key
    assert saved["config"]["data"]["window_s"] == 4.0 and saved["config"]["train"]["crop_s"] == 0.0
    assert saved["config"]["train"]["precision"] == "fp32"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == saved["config"]


def test_import_overrides_and_overwrite(tmp_path):
    from speaker_extraction.import_checkpoint import main

    source = tmp_path / "authors.pt"
    write_authors_checkpoint(source)
    run = tmp_path / "run"
    assert main(["--from", "neurospex", "--checkpoint", str(source), "--out", str(run), "data.split.seed=3"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["split"]["seed"] == 3
    write_authors_checkpoint(source, seed=5)  # new weights replace the earlier import with --overwrite
    assert main(["--from", "neurospex", "--checkpoint", str(source), "--out", str(run), "--overwrite"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["split"]["seed"] == 0
    assert json.loads((run / "import.json").read_text())["tensors"] == len(tiny_authors_state())


def test_array_mode_is_the_model_on_the_arrays_as_they_are(tmp_path):
    from speaker_extraction.import_checkpoint import import_neurospex
    from speaker_extraction.predict import load_run, main

    source = tmp_path / "authors.pt"
    write_authors_checkpoint(source)
    import_neurospex(source, tmp_path / "run")
    rng = np.random.default_rng(0)
    mixture = (rng.standard_normal((3, 32000)) * 0.1).astype(np.float32)
    eeg = rng.standard_normal((3, 512, 64)).astype(np.float32)
    np.savez(tmp_path / "in.npz", mixture=mixture, eeg=eeg)
    assert main(["--run", str(tmp_path / "run"), "--arrays", str(tmp_path / "in.npz"), "--out",
                 str(tmp_path / "out.npz"), "--batch-size", "2"]) == 0
    model, _ = load_run(tmp_path / "run")
    with torch.no_grad():
        expected = model(torch.from_numpy(mixture), torch.from_numpy(eeg)).numpy()
    with np.load(tmp_path / "out.npz") as out:
        assert list(out.keys()) == ["estimate"]
        np.testing.assert_allclose(out["estimate"], expected, rtol=1e-5, atol=1e-6)


TINY_PUBLISHED_TRAIN = {
    "model": {"type": "neurospex_published", **TINY_SIZES, "R": 1, "X": 1},
    "data": {"window_s": 4.0, "hop_s": 4.0, "split": {"protocol": "trial"}},
    "train": {"epochs": 1, "batch_size": 2, "lr": 1.0e-3, "patience": 0, "seed": 0, "max_steps_per_epoch": 1,
              "max_val_windows": 2},
}


def test_train_runs_the_published_model(kul_dataset, tmp_path):
    """The kit's train.py on the published model (other windows: tests/hostile/test_import_neurospex.py)."""
    from speaker_extraction.train import main
    from util.training import load_checkpoint

    config = tmp_path / "published_tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_PUBLISHED_TRAIN))
    run = tmp_path / "run"
    assert main(["--config", str(config), "--data", str(kul_dataset), "--out", str(run), "--no-progress"]) == 0
    state = load_checkpoint(run / "best.pt")
    assert state["model_type"] == "neurospex_published" and np.isfinite(state["extra"]["best_val"])


def test_full_path_import_then_evaluate_with_controls(kul_dataset, tmp_path, capsys):
    from speaker_extraction.evaluate import main as evaluate_main
    from speaker_extraction.import_checkpoint import main as import_main

    source = tmp_path / "authors.pt"
    write_authors_checkpoint(source, "module")
    run, report_path = tmp_path / "run", tmp_path / "report.json"
    assert import_main(["--from", "neurospex", "--checkpoint", str(source), "--out", str(run)]) == 0
    assert evaluate_main(["--run", str(run), "--data", str(kul_dataset), "--out", str(report_path), "--no-progress",
                          "--aad-windows", "1,5"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["window_s"] == 4.0 and report["n_windows"] == report["overall"]["n_windows"] > 0
    for key in ("si_sdr", "si_sdri", "pesq", "stoi", "confusion_rate"):
        assert np.isfinite(report["overall"][key]), key
    assert report["score"] == pytest.approx(report["overall"]["si_sdri"])
    controls = report["controls"]
    assert np.isfinite(controls["noise_eeg"]["score"]) and np.isfinite(controls["mismatched_eeg"]["score"])
    assert controls["mixture"]["score"] == pytest.approx(0.0)
    assert report["score_above_noise"] == pytest.approx(report["score"] - controls["noise_eeg"]["score"])
    assert report["costly_controls"] is True
    assert {row["window_s"] for row in report["extraction_aad"]["windows"]} == {1.0, 5.0}
    assert "SI-SDRi" in printed and "noise EEG" in printed and "shuffled" in printed
