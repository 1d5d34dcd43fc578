"""Import a CAT-guided WaveNet checkpoint trained with the authors' code into a kit run folder.

    python -m task2_regression.import_checkpoint --from mtwave --checkpoint FILE --out RUN [--overwrite] \
        [--dilation-cycle 12]

FILE: what the authors' code writes: its training layout ``{'epoch', 'state_dict', 'optimizer',
'learning_rate'}``, a bare state dict (their checkpoint average) or either with the DataParallel prefix
``module.`` (`util.checkpoint_import.read_state_dict`; loaded with ``weights_only=True``).

The model sizes are read from the tensor shapes (`infer_mtwave_sizes`): the residual and skip widths of
the first stages, the width of the mag stage, the number of gated blocks per regressor. The dilation cycle
has no parameter of its own, so it is a flag (the published 12; with no more blocks than the cycle every
cycle >= the block count is the same function). The kit's ``cat_wavenet_published`` is built with those
sizes (the rest of the config is configs/cat_wavenet_published.yaml, the published recipe), every key is
loaded through `util.checkpoint_import.load_mapped` (the first missing, unexpected or wrongly shaped key is
refused in one line), and RUN is written whole (a temporary sibling renamed into place):

    RUN/best.pt       the weights and the resolved config (`util.training.save_checkpoint`, task2, fp32)
    RUN/config.yaml   the same config
    RUN/import.json   where the weights came from (file, SHA-256, sizes, unused parameters)

so that `task2_regression.predict` (test set or ``--arrays``), `task2_regression.evaluate`, ``submit.py``
and `evaluation.task2` with its controls use it as any trained run.
"""
from __future__ import annotations
if not __package__:  # run by path (python task2_regression/import_checkpoint.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import re
from pathlib import Path
from typing import Callable, Sequence

from util.errors import EEGKitError, run_cli

SOURCES = ("mtwave",)
PUBLISHED_CONFIG = Path(__file__).resolve().parent / "configs" / "cat_wavenet_published.yaml"
PUBLISHED_CYCLE = 12
RUN_FILES = ("best.pt", "config.yaml", "import.json")  # all an imported run folder holds
STAGE_PREFIXES = ("eeg2envblock", "block1.Fast1", "block2.Fast1", "block3.Fast1")


def _shape(state: dict, key: str, source, rank: int) -> tuple[int, ...]:
    if key not in state:
        first = next(iter(state))
        raise EEGKitError(f"{source}: not a CAT-guided WaveNet (MTWAVE) state dict: no key {key!r} "
                          f"(its first key is {first!r})")
    shape = tuple(int(n) for n in state[key].shape)
    if len(shape) != rank:
        raise EEGKitError(f"{source}: key {key!r} has shape {shape}, expected {rank} axes")
    return shape


def infer_mtwave_sizes(state: dict, source) -> dict:
    """Constructor sizes of ``cat_wavenet_published`` from an MTWAVE state dict's shapes.

    {'residual_channels', 'skip_channels', 'last_stage_channels', 'layers'}; one line naming the key when
    the state dict is not an MTWAVE one or its stages disagree on the number of gated blocks.
    """
    residual, eeg_channels, _ = _shape(state, "eeg2envblock.init_conv.0.conv.weight_v", source, 3)
    if eeg_channels != 64:
        raise EEGKitError(f"{source}: key 'eeg2envblock.init_conv.0.conv.weight_v' takes {eeg_channels} input "
                          f"channels; the published model reads 64 EEG channels")
    skip = _shape(state, "eeg2envblock.residual_layer.residual_blocks.0.skip_conv.weight_v", source, 3)[0]
    last_stage = _shape(state, "block3.Fast1.init_conv.0.conv.weight_v", source, 3)[0]
    counts = {}
    for prefix in STAGE_PREFIXES:
        pattern = re.compile(re.escape(prefix) + r"\.residual_layer\.residual_blocks\.(\d+)\.")
        found = {int(m.group(1)) for key in state if (m := pattern.match(key))}
        if not found:
            raise EEGKitError(f"{source}: not a CAT-guided WaveNet (MTWAVE) state dict: no "
                              f"'{prefix}.residual_layer.residual_blocks.*' keys")
        if found != set(range(len(found))):
            gap = min(set(range(max(found) + 1)) - found)
            raise EEGKitError(f"{source}: missing key '{prefix}.residual_layer.residual_blocks.{gap}.*' "
                              f"(blocks {sorted(found)})")
        counts[prefix] = len(found)
    if len(set(counts.values())) > 1:
        raise EEGKitError(f"{source}: the regressors have different numbers of gated blocks "
                          f"({', '.join(f'{p}: {n}' for p, n in counts.items())}); the published model has one")
    return {"residual_channels": residual, "skip_channels": skip, "last_stage_channels": last_stage,
            "layers": counts["eeg2envblock"]}


def published_config(sizes: dict, dilation_cycle: int) -> dict:
    """The resolved run config: configs/cat_wavenet_published.yaml with ``sizes`` (no dataset needed)."""
    from task2_regression.models import check_model_config
    from task2_regression.train import DEFAULTS_PATH, SCHEMA_PATH
    from util import config as config_util

    config = config_util.load_config(PUBLISHED_CONFIG)
    config["model"].update(sizes, dilation_cycle=int(dilation_cycle))
    if sizes["skip_channels"] == sizes["residual_channels"]:
        config["model"]["skip_channels"] = None
    cfg = config_util.resolve(config, config_util.load_defaults(DEFAULTS_PATH), config_util.load_schema(SCHEMA_PATH))
    check_model_config(cfg["model"])
    cfg["targets"] = list(cfg["targets"])
    return cfg


def import_mtwave(checkpoint, out_dir, overwrite: bool = False, dilation_cycle: int = PUBLISHED_CYCLE,
                  say: Callable[[str], None] = print) -> dict:
    """Import an MTWAVE checkpoint into the run folder ``out_dir`` (module docstring); returns import.json's dict."""
    import torch

    from task2_regression.models import build_model
    from util.atomic import atomic_write_json
    from util.checkpoint_import import file_sha256, load_mapped, read_state_dict, unused_report
    from util.config import save_config
    from util.features import BANDS
    from util.outdir import check_out_dir, staged_dir
    from util.training import save_checkpoint

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if isinstance(dilation_cycle, bool) or not isinstance(dilation_cycle, int) or dilation_cycle < 1:
        raise EEGKitError(f"--dilation-cycle {dilation_cycle}: must be an integer >= 1")
    # --overwrite replaces an earlier import (a run folder holding only RUN_FILES), never a trained run
    earlier_import = overwrite and (out_dir / "import.json").is_file()
    check_out_dir(out_dir, overwrite=overwrite, inputs=[checkpoint], resumable=earlier_import, own=RUN_FILES)
    state = read_state_dict(checkpoint)
    sizes = infer_mtwave_sizes(state, checkpoint)
    cfg = published_config(sizes, dilation_cycle)
    torch.manual_seed(0)  # the weights are all replaced; a fixed seed keeps the build itself repeatable
    model = build_model(cfg["model"], {name: BANDS[name] for name in cfg["targets"]})
    unused = load_mapped(model, state, source=checkpoint)
    counts = model.parameter_counts()
    record = {"source": "mtwave", "checkpoint": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint),
              "tensors": len(state), "parameters": counts["all"], "parameters_used": counts["used"],
              "sizes": {**sizes, "dilation_cycle": int(dilation_cycle)}, "unused_keys": len(unused),
              "unused": unused_report(model)}
    with staged_dir(out_dir, "--out", overwrite=overwrite) as tmp:
        save_config(cfg, tmp / "config.yaml")
        save_checkpoint(tmp / "best.pt", model, cfg, task="task2",
                        extra={"epoch": 0, "imported_from": record["checkpoint"], "sha256": record["sha256"]})
        atomic_write_json(tmp / "import.json", record, indent=1)
    say(f"imported {len(state)} tensors ({counts['all']:,} parameters) from {checkpoint} into {out_dir}: "
        f"cat_wavenet_published, residual {sizes['residual_channels']}, skip {sizes['skip_channels']}, mag stage "
        f"{sizes['last_stage_channels']}, {sizes['layers']} blocks per regressor, dilation cycle {dilation_cycle}")
    say(record["unused"])
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m task2_regression.import_checkpoint",
        description="Turn a checkpoint written by the published model's own code into a kit run folder "
                    "(best.pt + config.yaml + import.json) that task2_regression.predict / evaluate, submit.py "
                    "and evaluation.task2 use unchanged.")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="whose checkpoint it is: mtwave = the CAT-guided WaveNet authors' MTWAVE (imported "
                             "as model type cat_wavenet_published)")
    parser.add_argument("--checkpoint", required=True,
                        help="the file: their training layout {'epoch', 'state_dict', 'optimizer', ...}, a bare "
                             "state dict (their checkpoint average), or either with keys prefixed 'module.' "
                             "(DataParallel); loaded with torch.load(weights_only=True)")
    parser.add_argument("--out", required=True,
                        help="the run folder to write (refused if it exists and is not empty, unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier import in --out (a folder holding only best.pt, config.yaml and "
                             "import.json; a trained run is never replaced); the new folder replaces it whole, "
                             "when complete")
    parser.add_argument("--dilation-cycle", type=int, default=PUBLISHED_CYCLE,
                        help="dilation 2 ** (n %% cycle) of gated block n; a state dict does not store it (default "
                             "12, the published value; with no more blocks than the cycle any cycle >= the block "
                             "count gives the same model)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.source == "mtwave":
        import_mtwave(args.checkpoint, args.out, overwrite=args.overwrite, dilation_cycle=args.dilation_cycle)
    return 0


if __name__ == "__main__":
    run_cli(main)
