"""Import a NeuroSpex checkpoint trained with the authors' code into a kit run folder.

    python -m speaker_extraction.import_checkpoint --from neurospex --checkpoint FILE --out RUN \
        [--config CONFIG] [--overwrite] [data.split.seed=1 ...]

FILE is a model file of the authors' ``ConvTasNet_dConv_MHA_Net`` (reference: published_models.md
section 2): their training layout ``{'epoch', 'state_dict', ...}``, a bare state dict, or either with
the ``module.`` prefix of DataParallel; it is read with ``torch.load(weights_only=True)`` by
`util.checkpoint_import.read_state_dict`. The sizes ``N, L, B, H, P, X, R`` and the number of EEG-encoder
blocks are read from the tensors' shapes (`infer_model_config`), the EEG window (``eeg_frames``) from
the time LayerNorm's length (512 = 4 s at 128 Hz, so ``data.window_s`` = 4). The keys are the kit's
``neurospex_published`` model's own, one for one; `util.checkpoint_import.load_mapped` refuses the first
missing, unexpected, wrongly shaped or non-finite tensor in one line, and nothing is written then.

RUN becomes a normal run folder, written whole or not at all (`util.outdir.staged_dir`):
``best.pt`` (the kit's checkpoint: weights + the resolved config, fp32; `util.training.save_checkpoint`),
``config.yaml`` and ``import.json`` (source file, its SHA-256, the sizes read, parameter count). So
``speaker_extraction.predict`` (wav or ``--arrays`` mode) and ``speaker_extraction.evaluate`` (with its
controls) run on it unchanged. Its data and train sections come from ``--config`` (default
``configs/neurospex_published.yaml``: KUL data at 128 Hz / 8 kHz, 4-s windows, the trial split) with the
``dotted.key=value`` overrides; ``model.*`` and ``data.window_s`` come from the checkpoint only.

Library API: `infer_model_config(state, path) -> model section`, `import_neurospex(checkpoint, out, ...)`.
"""
from __future__ import annotations
if not __package__:  # run by path (python speaker_extraction/import_checkpoint.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import re
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import torch

from util.errors import EEGKitError, run_cli

SOURCES = ("neurospex",)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "neurospex_published.yaml"
RUN_FILES = ("best.pt", "config.yaml", "import.json")  # what an import writes (and --overwrite may replace)

# the tensors whose shapes give the sizes: key -> number of axes
_SIZING_KEYS = {
    "speech_encoder.conv1d_U.weight": 3,  # (N, 1, L)
    "separator.bottleneck_conv1x1.weight": 3,  # (B, N, 1)
    "separator.tcn.0.tcn.0.conv1x1.weight": 3,  # (H, B, 1)
    "separator.tcn.0.tcn.0.dconv.weight": 3,  # (H, 1, P)
    "eeg_encoder.pre_conv.weight": 3,  # (64, C, 3)
}


def _count(state: Mapping, pattern: str) -> int:
    """How many distinct indices ``{i}`` occur in keys matching ``pattern`` (a regex with one group)."""
    found = {int(match.group(1)) for key in state if (match := re.match(pattern, key))}
    return len(found)


def infer_model_config(state: Mapping[str, torch.Tensor], path: str | Path) -> dict:
    """The ``model:`` section (type neurospex_published) whose parameters have the shapes in ``state``."""
    for key, ndim in _SIZING_KEYS.items():
        if key not in state:
            sample = ", ".join(repr(k) for k in list(state)[:2])
            raise EEGKitError(f"{path}: not a NeuroSpex (ConvTasNet_dConv_MHA_Net) state dict: no key {key!r} "
                              f"(it has {len(state)} keys, e.g. {sample})")
        if state[key].dim() != ndim:
            raise EEGKitError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, expected {ndim} axes")
    n_filters, _, kernel = state["speech_encoder.conv1d_U.weight"].shape
    bottleneck = state["separator.bottleneck_conv1x1.weight"].shape[0]
    hidden = state["separator.tcn.0.tcn.0.conv1x1.weight"].shape[0]
    tcn_kernel = state["separator.tcn.0.tcn.0.dconv.weight"].shape[2]
    model = {"type": "neurospex_published", "N": int(n_filters), "L": int(kernel), "B": int(bottleneck),
             "H": int(hidden), "P": int(tcn_kernel),
             "X": _count(state, r"separator\.tcn\.0\.tcn\.(\d+)\."),
             "R": _count(state, r"separator\.tcn\.(\d+)\."),
             "adc_blocks": _count(state, r"eeg_encoder\.d_Conv_Att_block\.(\d+)\."),
             "eeg_channels": int(state["eeg_encoder.pre_conv.weight"].shape[1])}
    norm = state.get("eeg_encoder.d_Conv_Att_block.0.layernorm_depth_conv.weight")
    if norm is not None:
        if norm.dim() != 1:
            raise EEGKitError(f"{path}: key 'eeg_encoder.d_Conv_Att_block.0.layernorm_depth_conv.weight' has shape "
                              f"{tuple(norm.shape)}, expected one axis (the EEG window's frames)")
        model["eeg_frames"] = int(norm.shape[0])
    return model


def build_run_config(model_cfg: dict, config_path: str | Path, overrides: Sequence[str], path: Path) -> dict:
    """The resolved run config: ``config_path``'s data/train sections, the overrides, the checkpoint's model
    section, and ``data.window_s`` / ``model.samples`` from the checkpoint's EEG window."""
    from speaker_extraction.train import resolve_config
    from util.config import load_config

    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.startswith("model.") or key in ("model", "data.window_s"):
            raise EEGKitError(f"override '{item}': the model section and data.window_s come from the checkpoint "
                              f"({path}), not from overrides")
    config = load_config(config_path, overrides)
    config["model"] = dict(model_cfg)
    config = resolve_config(config)  # fills the data rates in, checks everything once
    fs_eeg, fs_audio = int(config["data"]["fs_eeg"]), int(config["data"]["fs_audio"])
    frames = int(config["model"].get("eeg_frames", 512))
    samples = Fraction(frames * fs_audio, fs_eeg)
    if samples.denominator != 1:
        raise EEGKitError(f"{path}: its EEG window of {frames} frames at {fs_eeg} Hz is not a whole number of "
                          f"audio samples at {fs_audio} Hz")
    window_s = frames / fs_eeg
    config["model"]["eeg_frames"], config["model"]["samples"] = frames, int(samples)
    config["data"]["window_s"] = window_s
    if not any(item.split("=", 1)[0].strip() == "data.hop_s" for item in overrides):
        config["data"]["hop_s"] = window_s
    if float(config["train"]["crop_s"]) > 0:
        raise EEGKitError(f"{config_path}: train.crop_s {config['train']['crop_s']} > 0, but this model takes only "
                          f"whole {window_s:g}-s windows; set train.crop_s=0")
    return resolve_config(config)


def import_neurospex(checkpoint: str | Path, out: str | Path, config_path: str | Path = DEFAULT_CONFIG,
                     overrides: Sequence[str] = (), overwrite: bool = False) -> dict:
    """Import the authors' NeuroSpex model file ``checkpoint`` as the run folder ``out`` (see the module
    docstring); returns ``{"out", "model", "parameters", "tensors", "unused"}``."""
    from speaker_extraction.models import build_model
    from util.atomic import atomic_write_json
    from util.checkpoint_import import file_sha256, load_mapped, read_state_dict, unused_report
    from util.config import save_config
    from util.outdir import check_out_dir, staged_dir
    from util.training import count_parameters, save_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    check_out_dir(out, overwrite=overwrite, inputs=[checkpoint, config_path], resumable=overwrite, own=RUN_FILES)
    state = read_state_dict(checkpoint)  # {key: tensor}
    config = build_run_config(infer_model_config(state, checkpoint), config_path, overrides, checkpoint)
    model = build_model(config["model"])
    unused = load_mapped(model, state, source=checkpoint)
    model = model.float().eval()
    n_parameters = count_parameters(model, trainable_only=False)
    record = {"source": "neurospex (ConvTasNet_dConv_MHA_Net, the authors' released model file)",
              "checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint), "model": config["model"],
              "parameters": n_parameters, "tensors": len(state), "unused": unused}
    with staged_dir(out, "--out", overwrite) as folder:
        save_checkpoint(folder / "best.pt", model, config, extra={"imported": record}, task="speaker_extraction")
        save_config(config, folder / "config.yaml")
        atomic_write_json(folder / "import.json", record, indent=1)
    return {"out": str(out), "model": config["model"], "parameters": n_parameters, "tensors": len(state),
            "unused": unused, "unused_report": unused_report(model)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Import a NeuroSpex checkpoint trained with the authors' code (ConvTasNet_dConv_MHA_Net) as a "
                    "kit run folder for speaker_extraction.predict and speaker_extraction.evaluate.")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="whose model file it is: 'neurospex' (the NeuroSpex authors' ConvTasNet_dConv_MHA_Net)")
    parser.add_argument("--checkpoint", required=True,
                        help="the model file: the authors' training layout {'epoch', 'state_dict', ...}, a bare state "
                             "dict, or either with DataParallel's 'module.' prefix (read with weights_only=True)")
    parser.add_argument("--out", required=True,
                        help="run folder to write (best.pt, config.yaml, import.json); must be absent or empty "
                             "unless --overwrite")
    parser.add_argument("--config", default=None,
                        help="run config whose data and train sections the run gets (default: "
                             "speaker_extraction/configs/neurospex_published.yaml); its model section is replaced by "
                             "the sizes read from the checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier import in --out (a folder holding other files, or a trained run, "
                             "is still refused)")
    parser.add_argument("overrides", nargs="*",
                        help="dotted.key=value changes to the data/train sections, e.g. data.split.seed=1 "
                             "(model.* and data.window_s come from the checkpoint)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = DEFAULT_CONFIG if args.config is None else args.config
    result = import_neurospex(args.checkpoint, args.out, config, args.overrides, overwrite=args.overwrite)
    sizes = " ".join(f"{k}={v}" for k, v in result["model"].items() if k != "type")
    print(f"imported {result['tensors']} tensors ({result['parameters']:,} parameters) from {args.checkpoint} as "
          f"neurospex_published ({sizes}) -> {result['out']}")
    print(result["unused_report"])
    return 0


if __name__ == "__main__":
    run_cli(main)
