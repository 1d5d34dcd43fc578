"""The one training loop of the kit (Task 2 regression and speaker extraction): `fit`.

A task's ``train.py`` resolves its config, loads its data and passes ``build() -> model``,
``step(model, batch, epoch) -> (loss, {term: float})`` and ``score(model, val_set, info) -> {name: value}``
(reduced over ranks; ``monitor`` names the one for early stopping and ``best.pt``). `fit` owns
seeding (``seed + rank``; the weights from ``manual_seed(seed)`` on every rank), the DDP wrap, Adam,
the scheduler (StepLR every ``train.lr_step_epochs``, or halving on a plateau with
``train.lr_decay_patience``), clipping, the non-finite guard, validation (after epoch 0, every
``train.val_every``-th epoch and the last; ``patience`` and ``lr_decay_patience`` count validations, and
epochs without one log no scores), early stopping, resume with the random state, and the run folder (rank 0 only): config.yaml, best.pt, last.pt, checkpoints/epoch_XXXX.pt,
averaged.pt (``average`` or ``train.average_checkpoints``: the uniform average of the periodic checkpoints, key by key,
`util.training.average_checkpoints`), log.csv (epochs from 0, ``loss_<term>``, the scores, lr, time_s) and curves.png (re-drawn after the first
epoch, then at most every ``PLOT_EVERY_S`` seconds, and after the last epoch).
Batches are this rank's share of one seeded permutation per epoch, each with ``index`` (dataset
indices); progress bars show on rank 0 when stderr is a terminal.

Precision (``train.precision: fp32 | bf16``): `set_precision` hooks the model so that its forward runs
under bf16 autocast (CPU or CUDA) and its floating outputs come back as fp32; the loss, Pearson, SI-SDR
(computed by the task outside the forward) and the fp32 parameters with Adam's state stay fp32. Adam is
torch's fused kernel (`make_adam`, eps ``train.adam_eps``) on CPU and CUDA. On CUDA the batch tensors are pinned and moved
with ``non_blocking`` before ``step`` sees them; the per-step loss terms are summed on the device
(no host sync per step except the non-finite check).
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from util import distributed
from util.config import save_config
from util.errors import EEGKitError
from util.outdir import check_out_dir, out_lock, prepare_out_dir
from util.training import (CSVLogger, EarlyStopping, average_checkpoints, load_checkpoint, plain, plot_curves,
                           save_checkpoint, seed_everything)


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise EEGKitError(f"config: train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _as_fp32(output):
    """Floating tensors in ``output`` (a tensor, dict, list or tuple of them) cast to float32."""
    if torch.is_tensor(output):
        return output.float() if output.is_floating_point() and output.dtype != torch.float32 else output
    if isinstance(output, dict):
        return {key: _as_fp32(value) for key, value in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_as_fp32(value) for value in output)
    return output


def add_run_arguments(parser) -> None:
    """The flags every task's ``train.py`` shares, for the run folder this engine writes: ``--out``,
    ``--epochs``, ``--resume``, ``--overwrite``, ``--device`` (`fit` and `util.outdir` give them meaning)."""
    parser.add_argument("--out", required=True, help="run folder for checkpoints, config.yaml, log.csv, curves.png")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs (>= 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pt (model, optimizer, scheduler, epoch, early stopping, RNG); "
                             "the config must be the run's (only train.epochs may change)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow a non-empty OUT: the old run's files are replaced by a new run")
    parser.add_argument("--device", default=None, help="force 'cpu' or 'cuda' (default: cuda when available)")


def with_epochs(config: dict, epochs: int | None) -> dict:
    """``config`` with ``--epochs`` applied as ``train.epochs`` (None: unchanged); a negative count is one line."""
    if epochs is None:
        return config
    if int(epochs) < 0:
        raise EEGKitError(f"--epochs {epochs}: must be >= 0")
    from util.config import apply_overrides

    return apply_overrides(config, [f"train.epochs={int(epochs)}"])


def restore_model(model: torch.nn.Module, state: dict, path, precision: str = "fp32") -> torch.nn.Module:
    """A run's model ready for inference: the checkpoint's ``state["model"]`` weights loaded (weights that do not
    fit the model of its config are one line naming ``path``), the run's ``train.precision`` applied
    (`set_precision`), eval mode. Every task's predict rebuilds its runs through this."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise EEGKitError(f"{path}: weights do not fit the model in its config ({str(error).splitlines()[0]})") from None
    set_precision(model, str(precision))
    return model.eval()


def set_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Run ``model``'s forward under bf16 autocast with fp32 outputs (``bf16``), or plainly (``fp32``).

    Done with forward hooks on ``model`` itself (no wrapper: state_dict keys and DDP are untouched);
    calling it again replaces the previous setting. Returns ``model``.
    """
    check_precision(precision)
    for handle in getattr(model, "_precision_hooks", ()):
        handle.remove()
    model._precision_hooks = ()
    model.precision = precision
    if precision == "fp32":
        return model
    entered: list = []

    def enter(module, args):
        tensors = [a for a in args if torch.is_tensor(a)] or list(module.parameters())[:1]
        device_type = tensors[0].device.type if tensors else "cpu"
        context = torch.autocast(device_type, dtype=torch.bfloat16)
        context.__enter__()
        entered.append(context)

    def leave(module, args, output):
        if entered:
            entered.pop().__exit__(None, None, None)
        return _as_fp32(output)

    model._precision_hooks = (model.register_forward_pre_hook(enter),
                              model.register_forward_hook(leave, always_call=True))
    return model


def make_adam(parameters, lr: float, betas, eps: float = 1e-8):
    """Adam as one fused kernel per parameter (CPU and CUDA), the foreach one where fused is refused.

    ``eps`` is Adam's denominator term (torch's default 1e-8; ``train.adam_eps`` in a config).

    The fused kernel reads each parameter, gradient and moment once per step; foreach on CPU is a C++ loop
    of ~10 elementwise passes per tensor. Same update as ``torch.optim.Adam``; it differs from the
    per-tensor loop by rounding only (tests/test_conv.py). The parameters' device picks the kernel.
    """
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(parameters, lr=lr, betas=betas, eps=eps, foreach=True)


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of ``batch`` on ``device`` (pinned + ``non_blocking`` on CUDA; a no-op on CPU).

    ``index`` (dataset indices, read on the host) stays where it is.
    """
    if device.type == "cpu":
        return batch
    return {key: (value.pin_memory().to(device, non_blocking=True)
                  if torch.is_tensor(value) and key != "index" else value)
            for key, value in batch.items()}


def show_progress(info: distributed.DistInfo, wanted: bool = True) -> bool:
    return wanted and info.is_main and sys.stderr.isatty()


def batches(dataset, indices: np.ndarray, batch_size: int, progress: bool = False, desc: str = ""):
    """Collated batches of ``dataset[i]`` for ``indices`` in order, each with ``index`` (batch,)."""
    chunks = [indices[s:s + batch_size] for s in range(0, len(indices), batch_size)]
    for chunk in tqdm(chunks, desc=desc, leave=False, disable=not progress):
        batch = torch.utils.data.default_collate([dataset[int(i)] for i in chunk])
        batch["index"] = torch.as_tensor(np.asarray(chunk, dtype=np.int64))
        yield batch


def _rng_state() -> dict:
    """The random state as tensors and plain data (a ``weights_only`` checkpoint holds nothing else)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                      float(cached)],
            "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), int(pos), int(has_gauss),
                         float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss))


# matplotlib costs ~0.3 s per figure: with 5-s epochs, plotting every epoch was ~6 % of a speaker-extraction run
PLOT_EVERY_S = 30.0
RUN_FILES = ("best.pt", "last.pt", "averaged.pt", "config.yaml", "log.csv", "curves.png", "checkpoints")
RESUME_FREE_KEYS = ("train.epochs", "train.threads")  # may differ between a run and its --resume


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved configs (tuples and lists compare equal)."""
    a, b = _flat(plain(old)), _flat(plain(new))
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return sorted(k for k in set(a) | set(b) if k not in RESUME_FREE_KEYS and norm(a.get(k)) != norm(b.get(k)))


def check_resume(config: dict, out_dir: Path, task: str) -> dict:
    """The state of ``out_dir/last.pt`` for a ``--resume`` with ``config``; refuses another task, model or config."""
    last_path = Path(out_dir) / "last.pt"
    if not last_path.is_file():
        raise EEGKitError(f"{last_path}: nothing to resume (no last.pt in the run folder)")
    state = load_checkpoint(last_path, task=task, model_type=str(config.get("model", {}).get("type", "")))
    differences = config_differences(state["config"], config)
    if differences:
        shown = ", ".join(f"{k}={_flat(plain(config)).get(k)!r} (run: {_flat(state['config']).get(k)!r})"
                          for k in differences[:3])
        raise EEGKitError(f"{last_path}: --resume with a different config: {shown}"
                          f"{' ...' if len(differences) > 3 else ''}; only train.epochs may change "
                          f"(use a new --out for a new config)")
    epoch = _check_extra(state.get("extra"), last_path)
    check_log(Path(out_dir) / "log.csv", epoch + 1)
    return state


# --------------------------------------------------------------------------- resume: the saved state, checked
MAX_EPOCH = 10**7  # an epoch number in last.pt beyond this is not one the kit wrote
MAX_LOG_BYTES = 64 << 20  # log.csv: one row per epoch (a few hundred bytes each)


def _damaged(path, what: str, why: str) -> EEGKitError:
    return EEGKitError(f"{path}: {what} {why}; the file was edited or damaged (resume from a copy of the run, "
                       f"or start a new --out)")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_extra(extra, path) -> int:
    """The epoch of a ``last.pt`` after checking its ``extra`` entries (epoch, early stopping, random state)."""
    if not isinstance(extra, dict):
        raise _damaged(path, "its 'extra' entry", f"is {type(extra).__name__}, not a mapping")
    epoch = extra.get("epoch", -1)
    if not _is_int(epoch) or not -1 <= epoch <= MAX_EPOCH:
        raise _damaged(path, "its epoch", f"is {epoch!r}, not a whole number in -1 .. {MAX_EPOCH}")
    stopping = extra.get("early_stopping")
    if stopping is not None:
        if not isinstance(stopping, dict) or set(stopping) != {"best", "bad_checks"}:
            raise _damaged(path, "its early-stopping state", f"is {stopping!r}, expected {{best, bad_checks}}")
        if not (stopping["best"] is None or _is_float(stopping["best"])) or not _is_int(stopping["bad_checks"]) \
                or not 0 <= stopping["bad_checks"] <= MAX_EPOCH:
            raise _damaged(path, "its early-stopping state", f"{stopping!r} is out of range")
    if extra.get("rng") is not None:
        _check_rng(extra["rng"], path)
    return epoch


def _check_rng(rng, path) -> None:
    """The saved random state (`_rng_state`'s layout), then applied once: the libraries check the rest."""
    ok = isinstance(rng, dict) and set(rng) >= {"torch", "numpy", "python"}
    if ok:
        t, n, p = rng["torch"], rng["numpy"], rng["python"]
        ok = (torch.is_tensor(t) and t.dtype == torch.uint8 and t.shape == torch.get_rng_state().shape
              and isinstance(n, (list, tuple)) and len(n) == 5 and n[0] == "MT19937" and torch.is_tensor(n[1])
              and tuple(n[1].shape) == (624,) and not n[1].is_floating_point()
              and bool(((n[1] >= 0) & (n[1] < 2**32)).all()) and _is_int(n[2]) and 0 <= n[2] <= 624
              and n[3] in (0, 1) and _is_int(n[3]) and _is_float(n[4])
              and isinstance(p, (list, tuple)) and len(p) == 3 and _is_int(p[0]) and torch.is_tensor(p[1])
              and tuple(p[1].shape) == (625,) and not p[1].is_floating_point()
              and bool(((p[1] >= 0) & (p[1] < 2**32)).all()) and (p[2] is None or _is_float(p[2])))
    if not ok:
        raise _damaged(path, "its random state (extra.rng)", "does not have the layout the kit writes")
    try:
        _set_rng_state(rng)
    except (RuntimeError, ValueError, TypeError, OverflowError) as error:
        raise _damaged(path, "its random state (extra.rng)", f"is refused ({str(error).splitlines()[0]})") from None


def check_log(path: Path, rows_needed: int) -> None:
    """``log.csv`` of a run being resumed: text, a header starting with ``epoch``, rows ``0 .. n-1`` of numbers
    (empty where an epoch had no validation), at least ``rows_needed`` of them (the epochs in last.pt)."""
    import csv
    import io

    from util.inputs import read_regular

    if not path.exists():
        if rows_needed > 0:
            raise EEGKitError(f"{path}: missing, but last.pt is at epoch {rows_needed - 1}; the run folder is "
                              f"incomplete (resume from a copy of the run, or start a new --out)")
        return
    data = read_regular(path, MAX_LOG_BYTES, what="training log")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _damaged(path, "the training log", f"is not UTF-8 text (byte {error.start})") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise _damaged(path, "the training log", "is empty")
    header = rows[0]
    if not header or header[0] != "epoch" or len(set(header)) != len(header) or "" in header:
        raise _damaged(path, "its header", f"{header[:6]!r} is not the kit's (epoch first, names unique)")
    for index, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise _damaged(path, f"row {index + 1}", f"has {len(row)} fields, the header {len(header)}")
        if row[0] != str(index):
            raise _damaged(path, f"row {index + 1}", f"has epoch {row[0][:20]!r}, expected {index}")
        for name, value in zip(header[1:], row[1:]):
            try:
                float(value) if value != "" else None
            except ValueError:
                raise _damaged(path, f"row {index + 1}", f"holds {value[:20]!r} in column {name[:40]!r}, not a "
                                                         f"number") from None
    if len(rows) - 1 < rows_needed:
        raise _damaged(path, "the training log", f"holds {len(rows) - 1} epoch(s), but last.pt is at epoch "
                                                 f"{rows_needed - 1}")


def _check_optimizer(saved, model: torch.nn.Module, path) -> None:
    """Adam's saved state against the model: one group, one entry per parameter of its shape, finite numbers."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), (list, tuple)) or len(saved["param_groups"]) != 1:
        raise _damaged(path, "its optimizer state", "does not have the layout the kit writes")
    group = saved["param_groups"][0]
    params = list(model.parameters())
    if not isinstance(group, dict) or list(group.get("params", [])) != list(range(len(params))):
        raise _damaged(path, "its optimizer state", f"does not list the model's {len(params)} parameters")
    for key in ("lr", "eps", "weight_decay"):
        if key in group and not (_is_float(group[key]) and group[key] >= 0):
            raise _damaged(path, f"its optimizer's {key}", f"is {group[key]!r}")
    betas = group.get("betas")
    if betas is not None and not (isinstance(betas, (list, tuple)) and len(betas) == 2
                                  and all(_is_float(b) and 0 <= b < 1 for b in betas)):
        raise _damaged(path, "its optimizer's betas", f"are {betas!r}")
    for index, entry in saved["state"].items():
        if not _is_int(index) or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise _damaged(path, "its optimizer state", f"has an entry {index!r} for no parameter")
        for key, value in entry.items():
            if not torch.is_tensor(value) or not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise _damaged(path, f"its optimizer's {key} of parameter {index}", "is not a finite tensor")
            if key == "step" and (value.numel() != 1 or float(value) < 0):
                raise _damaged(path, f"its optimizer's step of parameter {index}", f"is {value.tolist()!r}")
            if key != "step" and value.shape != params[index].shape:
                raise _damaged(path, f"its optimizer's {key} of parameter {index}",
                               f"has shape {tuple(value.shape)}, the parameter {tuple(params[index].shape)}")
            if key == "exp_avg_sq" and bool((value < 0).any()):
                raise _damaged(path, f"its optimizer's {key} of parameter {index}", "holds negative values")


def _same_layout(fresh, saved) -> bool:
    """``saved`` has the structure of ``fresh`` (a scheduler's state_dict): keys, numbers, lists of numbers."""
    if isinstance(fresh, dict):
        return isinstance(saved, dict) and set(saved) == set(fresh) and all(
            _same_layout(fresh[k], saved[k]) for k in fresh)
    if isinstance(fresh, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(fresh) and all(
            _same_layout(a, b) for a, b in zip(fresh, saved))
    if isinstance(fresh, bool):
        return isinstance(saved, bool)
    number = isinstance(saved, (int, float)) and not isinstance(saved, bool) and not math.isnan(saved)
    if isinstance(fresh, (int, float)):  # (ReduceLROnPlateau starts from best = -inf)
        return number and (isinstance(fresh, float) or _is_int(saved))
    if fresh is None:
        return saved is None or number
    if isinstance(fresh, str):
        return isinstance(saved, str)
    return True


def restore(state: dict, path, model: torch.nn.Module, optimizer, scheduler, early: EarlyStopping) -> int:
    """Load a checked ``last.pt`` into the model, Adam, the scheduler, early stopping and the random state;
    returns the first epoch to run. Anything that does not fit is one line naming the file."""
    weights = state["model"]
    broken = [name for name, value in weights.items()
              if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise _damaged(path, "its model weights", f"hold NaN/Inf ({broken[0]})")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise _damaged(path, "its model weights", f"do not fit the model ({str(error).splitlines()[0][:200]})") \
            from None
    if state.get("optimizer") is not None:
        _check_optimizer(state["optimizer"], model, path)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as error:
            raise _damaged(path, "its optimizer state", f"is refused ({str(error).splitlines()[0][:200]})") from None
    if state.get("scheduler") is not None:
        if not _same_layout(scheduler.state_dict(), state["scheduler"]):
            raise _damaged(path, "its learning-rate scheduler state", "does not have the layout of the run's scheduler")
        scheduler.load_state_dict(state["scheduler"])
    extra = state.get("extra") or {}
    epoch = _check_extra(extra, path)
    if extra.get("early_stopping") is not None:
        early.load_state_dict(extra["early_stopping"])
    if extra.get("rng") is not None:
        _set_rng_state(extra["rng"])
    return epoch + 1


def _scheduler(optimizer, tcfg: dict):
    if int(tcfg.get("lr_decay_patience", 0)) > 0:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                          patience=int(tcfg["lr_decay_patience"]))
    step_epochs = int(tcfg.get("lr_step_epochs", 0))
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(step_epochs, 1),
                                           gamma=float(tcfg.get("lr_gamma", 1.0)) if step_epochs > 0 else 1.0)


def _fit(config: dict, out_dir: str | Path, info: distributed.DistInfo, build: Callable[[], torch.nn.Module],
        step: Callable, score: Callable, train_set, val_set, batch_size: int, monitor: str,
        resume: bool = False, average: bool = False, progress: bool = True,
        say: Callable[[str], None] = print, *, task: str, overwrite: bool = False) -> dict:
    """Train one run (see the module docstring); returns ``{best_val, epochs_run, stopped_early, out_dir}``.

    ``config`` is the fully resolved config (stored in every checkpoint); its ``train`` section gives
    the loop's settings; ``batch_size`` is the global batch (it must divide over the ranks); ``task``
    ('task2' or 'speaker_extraction') is recorded in every checkpoint and checked on ``resume``.
    The run folder (`util.outdir` rule: a non-empty one needs ``resume`` or ``overwrite``) is written
    only once the first epoch has a finite validation score; a non-finite loss or score stops
    training with an error naming the epoch and keeps the last good checkpoint.
    """
    tcfg, out_dir = config["train"], Path(out_dir)
    speak = say if info.is_main else (lambda message: None)
    if batch_size % info.world_size:
        raise EEGKitError(f"config: batch_size {batch_size} is not divisible by world size {info.world_size}")
    precision = check_precision(str(tcfg.get("precision", "fp32")))
    check_out_dir(out_dir, overwrite=overwrite, resume=resume, resumable=True)
    if len(train_set) == 0:
        raise EEGKitError(f"{out_dir}: no training windows; nothing to train")
    if len(val_set) == 0:
        raise EEGKitError(f"{out_dir}: no validation windows; nothing to validate on")
    state = check_resume(config, out_dir, task) if resume else None
    rank_batch = batch_size // info.world_size
    seed = int(tcfg["seed"])
    seed_everything(seed + info.rank)  # per-rank Python/NumPy/torch streams (dropout, random crops)
    torch.manual_seed(seed)  # ... but identical initial weights on every rank
    model = distributed.wrap_ddp(build(), info)
    core = set_precision(distributed.unwrap(model), precision)
    optimizer = make_adam(core.parameters(), float(tcfg["lr"]), tuple(float(b) for b in tcfg["betas"]),
                          float(tcfg.get("adam_eps", 1e-8)))
    average = average or bool(tcfg.get("average_checkpoints", False))
    scheduler = _scheduler(optimizer, tcfg)
    early = EarlyStopping(int(tcfg["patience"]), mode="max")
    start_epoch, epochs = 0, int(tcfg["epochs"])
    last_path = out_dir / "last.pt"
    if resume:
        start_epoch = restore(state, last_path, core, optimizer, scheduler, early)  # every entry checked first
        speak(f"resumed from {last_path} at epoch {start_epoch}")
    logger = CSVLogger(out_dir / "log.csv", resume=resume) if info.is_main else None
    if logger is not None:
        logger.truncate(start_epoch)  # drop rows logged after the checkpoint was taken
    written = False  # the run folder is prepared with the first good checkpoint

    def prepare_run_folder() -> None:
        if overwrite and not resume and out_dir.is_dir():  # a new run replaces the old run's files
            import shutil

            for name in RUN_FILES:
                target = out_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        prepare_out_dir(out_dir)
        if not resume:
            save_config(config, out_dir / "config.yaml")

    if resume and info.is_main:
        prepare_out_dir(out_dir)  # stale temporaries of the killed run go now
        written = True
    last_good = f"{last_path} (epoch {start_epoch - 1})" if resume else "none written"
    ckpt_every = int(tcfg.get("checkpoint_every", 0)) or (1 if average else 0)
    max_steps, grad_clip = int(tcfg.get("max_steps_per_epoch", 0)), float(tcfg["grad_clip"])
    bars = show_progress(info, progress)
    epochs_run = 0
    val_every = int(tcfg.get("val_every", 1))
    if val_every < 1:
        raise EEGKitError(f"config: train.val_every must be >= 1, got {val_every}")
    plotted_at, unplotted = None, False  # curves.png: the first epoch, then at most every PLOT_EVERY_S, and the last

    def draw_curves() -> None:
        nonlocal plotted_at, unplotted
        plot_curves(out_dir / "log.csv", out_dir / "curves.png", title=out_dir.name)
        plotted_at, unplotted = time.perf_counter(), False
    for epoch in range(start_epoch, epochs):
        if early.should_stop:
            speak(f"early stopping already triggered (patience {early.patience}); nothing to do")
            break
        started = time.perf_counter()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        indices = distributed.shard_indices(len(train_set), info, epoch=epoch, seed=seed, shuffle=True)
        if max_steps > 0:
            indices = indices[: max_steps * rank_batch]
        sums: dict[str, float] = {}
        n_steps, loss_sum = 0, None
        model.train()
        for batch in batches(train_set, indices, rank_batch, bars, f"epoch {epoch}/{epochs}"):
            loss, terms = step(model, to_device(batch, info.device), epoch)
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(core.parameters(), grad_clip)
            optimizer.step()
            for name, value in terms.items():  # summed where they are (no host sync per step)
                value = value.detach() if torch.is_tensor(value) else float(value)
                sums[name] = sums.get(name, 0.0) + value
            n_steps += 1
        # checked once per epoch, not per step: no host sync in the loop, and under DDP no rank leaves the
        # loop alone (a NaN on one rank reaches every rank's weights through the gradient all-reduce)
        if loss_sum is not None and not torch.isfinite(loss_sum):
            raise EEGKitError(f"{out_dir}: training loss became {float(loss_sum)} at epoch {epoch}; training "
                              f"stopped, last good checkpoint: {last_good}; lower train.lr, set "
                              f"train.grad_clip or check the data for NaN/Inf or constant signals")
        lr = optimizer.param_groups[0]["lr"]
        broken = [name for name, p in core.named_parameters() if not torch.isfinite(p).all()]
        if broken:
            raise EEGKitError(f"{out_dir}: weights became NaN/Inf at epoch {epoch} ({broken[0]}"
                              f"{f' and {len(broken) - 1} more' if len(broken) > 1 else ''}); training stopped, last "
                              f"good checkpoint: {last_good}; lower train.lr (now {lr:g}) or set train.grad_clip")
        validated = epoch == 0 or (epoch + 1) % val_every == 0 or epoch == epochs - 1
        scores, value, improved = {}, None, False
        if validated:
            core.eval()
            with torch.no_grad():
                scores = score(core, val_set, info)
            core.train()
            value = float(scores[monitor])
            if not math.isfinite(value):
                raise EEGKitError(f"{out_dir}: validation {monitor} is {value} at epoch {epoch}; training stopped, "
                                  f"last good checkpoint: {last_good}; check the data for NaN/Inf, flat EEG or "
                                  f"constant targets, or lower train.lr")
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if validated:
                scheduler.step(value)
        else:
            scheduler.step()
        if validated:
            improved = early.step(value)
        epochs_run += 1
        # every rank calls the all-reduce (same keys everywhere): logged losses are the all-rank mean
        mean_terms = {f"loss_{name}": distributed.all_reduce_mean(float(total) / max(n_steps, 1), info)
                      for name, total in sorted(sums.items())}
        if info.is_main:
            if not written:
                prepare_run_folder()
                written = True
            row = {"epoch": epoch, "lr": lr, **mean_terms, **scores, "time_s": round(time.perf_counter() - started, 2)}
            logger.log(row)
            extra = {"epoch": epoch, "best_val": early.best, monitor: value,  # None: no validation this epoch
                     "early_stopping": early.state_dict(), "rng": _rng_state()}
            if improved:
                save_checkpoint(out_dir / "best.pt", core, config, extra=extra, task=task)
            save_checkpoint(last_path, core, config, optimizer, scheduler, extra=extra, task=task)
            last_good = f"{last_path} (epoch {epoch})"
            if ckpt_every and (epoch + 1) % ckpt_every == 0:
                save_checkpoint(out_dir / "checkpoints" / f"epoch_{epoch:04d}.pt", core, config, extra=extra,
                                task=task)
            unplotted = True
            if plotted_at is None or time.perf_counter() - plotted_at >= PLOT_EVERY_S:
                draw_curves()
            shown = "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
            say(f"epoch {epoch}: loss {mean_terms.get('loss_total', float('nan')):.4f}  {shown}  lr {lr:.2e}"
                f"{'  (best)' if improved else ''}")
        distributed.barrier(info)
        if early.should_stop:
            speak(f"early stopping at epoch {epoch} (no {monitor} gain for {early.patience} validations)")
            break
    if unplotted:  # the figure always ends with the last logged epoch
        draw_curves()
    if average and info.is_main:
        paths = sorted((out_dir / "checkpoints").glob("epoch_*.pt"))
        if not paths:
            raise EEGKitError(f"{out_dir / 'checkpoints'}: no periodic checkpoints to average")
        core.load_state_dict(average_checkpoints(paths))
        core.eval()
        with torch.no_grad():
            avg = score(core, val_set, distributed.DistInfo(0, 1, 0, info.device))[monitor]
        save_checkpoint(out_dir / "averaged.pt", core, config, extra={"averaged": [p.name for p in paths], monitor: avg},
                        task=task)
        say(f"averaged {len(paths)} checkpoints -> {out_dir / 'averaged.pt'} ({monitor} {avg:.4f})")
    distributed.barrier(info)
    return {"best_val": early.best, "epochs_run": epochs_run, "stopped_early": early.should_stop, "out_dir": str(out_dir)}


def fit(config: dict, out_dir: str | Path, info: distributed.DistInfo, *args, resume: bool = False,
        overwrite: bool = False, **kwargs) -> dict:
    """`_fit` (the loop: see its docstring) while rank 0 holds the run folder's lock file
    (`util.outdir.out_lock`): a second training into the same --out is refused while this one runs."""
    check_out_dir(out_dir, overwrite=overwrite, resume=resume, resumable=True)  # refusals before the lock file
    with out_lock(out_dir, "--out") if info.is_main else contextlib.nullcontext():
        return _fit(config, out_dir, info, *args, resume=resume, overwrite=overwrite, **kwargs)
