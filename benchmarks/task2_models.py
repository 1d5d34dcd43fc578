"""Speed / size / memory benchmark of the Task 2 models, plus the CAT-WaveNet optimisation ablation.

For each run config (task2_regression/configs/<name>.yaml, model built with
task2_regression.models.build_model) it measures, each config in its own
subprocess (so peak memory is that config's alone):
  params         parameter count;
  train win/s    training windows per second: forward + backward + Adam step on a
                 batch of `--train-batch` windows of the config's data.window_s;
  infer seg/s    30-s segments per second in eval mode under no_grad (weight norm
                 folded where the model supports it), batch `--infer-batch`;
  peak RSS       ru_maxrss of the worker process (MiB) and its growth over the RSS
                 after the model was built;
  GFLOP/s, %peak FLOPs of every kernel (benchmarks/speed.count_flops: FlopCounterMode plus the CPU
                 SDPA kernels it misses) over the measured time, and as a percentage of the matmul
                 peak of the precision in use (the config's train.precision), fp32 and bf16 peaks
                 timed in the same worker, interleaved with the model rounds (`--iters` rounds).
Each config runs as it trains: its model options (conv_impl auto: GEMM convs under bf16, nn.Conv1d in fp32), its
train.precision, Adam via util.trainer.make_adam (fused on CPU and CUDA).
Then the ablation (`--ablation-config`, default cat_wavenet_small; `--variants` picks rows): the
plain fp32 path (fast=False: plain gate and attention, nn.Conv1d, per-tensor Adam) against the fast
paths (fused gate, SDPA, folded weight norm at inference, make_adam; every variant keeps the config's
attention chunk, so all compute the same function), with nn.Conv1d or GEMM convs, in fp32 or bf16
(util.trainer.set_precision), optionally `--compile`; all with the same weights in one process, timed interleaved for `--rounds`
rounds in a rotating order together with the fp32 and bf16 matmul peaks. Reported: median seconds,
x plain = plain median / variant median with the 25-75 % range of the per-round ratios, GFLOP/s and
% of the same round's peak of the variant's precision (median, 25-75 % range). The row 'fast bf16 gemm,
no weight norm' is a cost probe: the same weights folded out of weight norm before training.

Example: python -m benchmarks.task2_models --quick --threads 2
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/task2_models.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.speed import count_flops, flop_count_lines, fmt_range, interleave, peak_fns, peak_rows, summary

REPO = Path(__file__).resolve().parents[1]

CONFIG_DIR = REPO / "task2_regression" / "configs"
DEFAULT_CONFIGS = ["linear", "vlaai", "vlaai_small", "dprnn_small", "cat_wavenet_small", "cat_wavenet"]
FS = 64


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def build(name: str, overrides: dict | None = None):
    """Model of config `name` with all its targets; returns (model, config)."""
    from task2_regression.models import build_model
    from util.features import BANDS

    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    targets = cfg.get("targets") or [cfg["target"]]
    model_cfg = dict(cfg["model"], **(overrides or {}))
    return build_model(model_cfg, {t: BANDS[t] for t in targets}), cfg


def _count_flops(fn) -> int:
    return count_flops(fn)


def _time(fn, iters: int) -> float:
    """Seconds per call (one warm-up call first)."""
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def _train_step_fn(model, batch: int, n_samples: int, fast_adam: bool = True):
    """One training step: forward, a loss, backward, Adam (fused like util.trainer.fit, or the
    per-tensor loop of the plain path)."""
    from util.trainer import make_adam

    eeg = torch.randn(batch, n_samples, 64)
    optimizer = (make_adam(model.parameters(), 1e-4, (0.9, 0.999)) if fast_adam
                 else torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False))
    model.train()

    def step():
        outputs = model(eeg)
        loss = sum((o**2).mean() for o in outputs.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _infer_fn(model, batch: int, n_samples: int):
    eeg = torch.randn(batch, n_samples, 64)

    def infer():
        with torch.no_grad():
            model(eeg)

    return infer


def worker(name: str, args) -> dict:
    """Measure one config (run in a fresh subprocess) as it trains: its model options, its train.precision,
    the conv path ``auto`` picks here, make_adam; the fp32/bf16 matmul peaks interleaved with it."""
    from util.trainer import set_precision

    torch.manual_seed(0)
    model, cfg = build(name)
    if not any(p.requires_grad for p in model.parameters()):
        raise SystemExit(f"{name}: model has no trainable parameters")
    precision = str((cfg.get("train") or {}).get("precision", "fp32"))
    set_precision(model, precision)
    rss_built = _current_rss_mib()
    n_params = sum(p.numel() for p in model.parameters())
    paper = name == "cat_wavenet"
    train_batch = 1 if paper else args.train_batch
    infer_batch = 1 if paper else args.infer_batch
    train_samples = int(round(float(cfg.get("data", {}).get("window_s", 5.0)) * FS))
    if paper and args.quick:
        train_samples = 5 * FS  # 30-s windows x 90 M parameters is minutes per step on 2 cores
    step = _train_step_fn(model, train_batch, train_samples)
    train_flops = _count_flops(step)
    infer_model, _ = build(name)
    infer_model.load_state_dict(model.state_dict())
    infer_model.eval()
    if hasattr(infer_model, "fold_weight_norm"):
        infer_model.fold_weight_norm()
    set_precision(infer_model, precision)
    infer = _infer_fn(infer_model, infer_batch, 30 * FS)
    infer_flops = _count_flops(infer)
    peaks, peak_flops = peak_fns()
    times = interleave({"train": step, "infer": infer, "peak fp32": peaks["fp32"], "peak bf16": peaks["bf16"]},
                       max(args.iters, 1), progress=False)
    peak_label = f"peak {precision}"
    train = summary(times, "train", flops=train_flops, peak_label=peak_label, peak_flops=peak_flops)
    inference = summary(times, "infer", flops=infer_flops, peak_label=peak_label, peak_flops=peak_flops)
    return {
        "config": name, "params": n_params, "precision": precision, "train_window_s": train_samples / FS,
        "train_batch": train_batch, "train_windows_per_s": train_batch / train["s"],
        "train_gflops": train["gflops"], "train_pct_peak": train["pct_peak"],
        "infer_batch": infer_batch, "infer_segments_per_s": infer_batch / inference["s"],
        "infer_gflops": inference["gflops"], "infer_pct_peak": inference["pct_peak"],
        "peaks": peak_rows(times, peak_flops),
        "peak_rss_mib": _rss_mib(), "rss_growth_mib": _rss_mib() - rss_built,
    }


# (label, model options, precision, fast Adam, fold weight norm: at inference / also for training); "plain" is
# the reference. The last row is a cost probe, not a training mode: the same weights with weight norm folded
# into plain conv weights before training, so its step has no weight-norm work (the same forward function).
VARIANTS = [
    ("plain fp32", dict(fast=False, conv_impl="native"), "fp32", False, False, False),
    ("fast fp32 native conv", dict(conv_impl="native"), "fp32", True, True, False),
    ("fast fp32 gemm conv", dict(conv_impl="gemm"), "fp32", True, True, False),
    ("fast bf16 native conv", dict(conv_impl="native"), "bf16", True, True, False),
    ("fast bf16 gemm conv", dict(conv_impl="gemm"), "bf16", True, True, False),
    ("fast bf16 gemm, no weight norm", dict(conv_impl="gemm"), "bf16", True, True, True),
]


def ablation(name: str, args) -> tuple[list[dict], dict]:
    """Plain fp32 vs the fast paths of one CAT-WaveNet config (same weights), interleaved in one process
    with the fp32 and bf16 matmul peaks; returns (rows, peaks)."""
    from util.trainer import set_precision

    torch.manual_seed(0)
    base, cfg = build(name, {"fast": False})
    state = base.state_dict()
    del base
    train_samples = int(round(float(args.ablation_window_s or cfg["data"]["window_s"]) * FS))
    wanted = [v for v in VARIANTS if not args.variants or v[0] in args.variants]
    fns, flops, flops_old, skipped = {}, {}, {}, []
    for label, options, precision, fast_adam, fold, fold_train in wanted:
        models = []
        for _ in range(2):  # one training model, one inference model
            model, _ = build(name, options)
            model.load_state_dict(state)
            models.append(set_precision(model, precision))
        train_model, infer_model = models
        infer_model.eval()
        if fold:  # folding only matters at inference; training keeps weight norm
            infer_model.fold_weight_norm()
        if fold_train:  # the weight-norm cost probe
            train_model.fold_weight_norm()
        fns[f"{label}|train"] = _train_step_fn(train_model, args.train_batch, train_samples, fast_adam)
        fns[f"{label}|infer"] = _infer_fn(infer_model, args.infer_batch, 30 * FS)
        flops[f"{label}|train"] = _count_flops(fns[f"{label}|train"])  # also the warm-up call
        flops[f"{label}|infer"] = _count_flops(fns[f"{label}|infer"])
        for kind in ("train", "infer"):
            flops_old[f"{label}|{kind}"] = count_flops(fns[f"{label}|{kind}"], in_place=False)
    if args.compile:
        label = "fast bf16 gemm conv + compile"
        model, _ = build(name, {"conv_impl": "gemm"})
        model.load_state_dict(state)
        compiled = torch.compile(set_precision(model, "bf16"), mode="default", dynamic=False)
        train_fn = _train_step_fn(compiled, args.train_batch, train_samples)
        warm, why = _warm_up_with_limit((train_fn,), args.compile_timeout)
        if warm is None:
            skipped.append({"variant": label, "error": f"not measured: {why}"})
        else:
            fns[f"{label}|train"] = train_fn
            flops[f"{label}|train"] = flops.get("fast bf16 gemm conv|train")
    peaks, peak_flops = peak_fns()
    fns["peak fp32"], fns["peak bf16"] = peaks["fp32"], peaks["bf16"]
    times = interleave(fns, args.rounds)
    rows = []
    for label, _, precision, _, _, _ in wanted + ([("fast bf16 gemm conv + compile", None, "bf16", True, True, False)]
                                               if f"fast bf16 gemm conv + compile|train" in fns else []):
        row = {"variant": label, "precision": precision}
        for kind in ("train", "infer"):
            key = f"{label}|{kind}"
            if key not in times:
                continue
            ref = f"{wanted[0][0]}|{kind}"
            row[kind] = summary(times, key, reference=ref, flops=flops.get(key), peak_label=f"peak {precision}",
                                peak_flops=peak_flops)
            row[kind]["times"] = times[key]
            row[kind].update(flops=flops.get(key), flops_old=flops_old.get(key))
        rows.append(row)
    return rows + skipped, peak_rows(times, peak_flops)


def _warm_up_with_limit(fns, limit_s: float) -> tuple[float | None, str]:
    """Call each fn once (torch.compile compiles here) under a wall-clock limit.

    Returns (seconds, "") on success, (None, why) on a timeout or a compile error.
    """
    import signal

    class _Timeout(Exception):
        pass

    fired = []

    def on_alarm(signum, frame):
        fired.append(True)
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(float(limit_s), 1e-3))
    start = time.perf_counter()
    try:
        for fn in fns:
            fn()
        return time.perf_counter() - start, ""
    except Exception as error:  # dynamo re-wraps the alarm's exception, so look at the flag
        if fired:
            return None, f"torch.compile warm-up (train + infer) did not finish within --compile-timeout {limit_s:g} s"
        return None, f"torch.compile failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _print_table(results: list[dict]) -> None:
    print("\nper config, as it trains (its train.precision, conv_impl auto, make_adam); the matmul peaks "
          "interleaved with it in the same worker; %peak = of the peak of the precision in use")
    header = (f"{'config':20s} {'prec':>5s} {'params':>11s} {'train win/s':>12s} {'(win s, batch)':>14s} "
              f"{'infer seg/s':>11s} {'peak RSS MiB':>12s} {'train GF/s':>10s} {'%peak':>6s} "
              f"{'infer GF/s':>10s} {'%peak':>6s} {'peak fp32/bf16 GF/s':>20s}")
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['config']:20s} not measured: {r['error']}")
            continue
        peaks = r["peaks"]
        print(f"{r['config']:20s} {r['precision']:>5s} {r['params']:>11,d} {r['train_windows_per_s']:>12.2f} "
              f"{'(%g, %d)' % (r['train_window_s'], r['train_batch']):>14s} "
              f"{r['infer_segments_per_s']:>11.2f} {r['peak_rss_mib']:>12.0f} "
              f"{r['train_gflops']:>10.2f} {r['train_pct_peak']:>6.1f} "
              f"{r['infer_gflops']:>10.2f} {r['infer_pct_peak']:>6.1f} "
              f"{'%.0f / %.0f' % (peaks['fp32']['gflops'], peaks['bf16']['gflops']):>20s}")


def _print_ablation(rows: list[dict], peaks: dict, rounds: int) -> None:
    print(f"{rounds} interleaved rounds (rotating order, the two matmul peaks timed in the same rounds); "
          f"medians; x = plain fp32 time / variant time (25-75 % range of the per-round ratios); "
          f"%peak = GFLOP/s over the same round's matmul peak of the variant's precision (FLOPs of every "
          f"kernel, CPU SDPA included)")
    print("matmul peak (2048^2, best of 3 per round): " + ", ".join(
        f"{name} {row['gflops']:.0f} GFLOP/s ({fmt_range(row['iqr'])})" for name, row in peaks.items()))
    print(f"{'variant':30s} {'train s':>8s} {'x plain':>8s} {'(IQR)':>11s} {'GF/s':>7s} {'%peak':>6s} {'(IQR)':>11s} "
          f"{'infer s':>8s} {'x plain':>8s} {'(IQR)':>11s} {'GF/s':>7s} {'%peak':>6s}")
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:30s} {row['error']}")
            continue
        cells = []
        for kind in ("train", "infer"):
            r = row.get(kind)
            if r is None:
                cells.append(f"{'-':>8s} {'':>8s} {'':>11s} {'':>7s} {'':>6s}" + (f" {'':>11s}" if kind == "train" else ""))
                continue
            cell = (f"{r['s']:>8.3f} {r['ratio']:>8.2f} {fmt_range(r['ratio_iqr']):>11s} "
                    f"{r.get('gflops', float('nan')):>7.1f} {r.get('pct_peak', float('nan')):>6.1f}")
            if kind == "train":
                cell += f" {fmt_range(r['pct_peak_iqr']) if 'pct_peak_iqr' in r else '-':>11s}"
            cells.append(cell)
        print(f"{row['variant']:30s} " + " ".join(cells))
    print("\n".join(flop_count_lines([row for row in rows if "error" not in row])))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS,
                        help="run configs (names in task2_regression/configs) to measure")
    parser.add_argument("--quick", action="store_true",
                        help="paper-size cat_wavenet trains on 5-s windows, batch 1 (else 30-s windows)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads in every process")
    parser.add_argument("--iters", type=int, default=3,
                        help="per config: interleaved rounds of train step, inference and the two matmul peaks "
                             "(after 1 warm-up); medians reported")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch (windows); 1 for paper size")
    parser.add_argument("--infer-batch", type=int, default=4, help="inference batch (30-s segments); 1 for paper size")
    parser.add_argument("--ablation-config", default="cat_wavenet_small",
                        help="CAT-WaveNet config for the optimisation ablation ('none' to skip)")
    parser.add_argument("--ablation-window-s", type=float, default=None,
                        help="ablation training window in seconds (default: the config's data.window_s)")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="ablation variants to time (labels as printed; the first one is the reference); "
                             "default all")
    parser.add_argument("--rounds", type=int, default=9,
                        help="ablation: interleaved timing rounds (rotating order); the median is reported with "
                             "the 25-75 %% range of the per-round ratios against plain")
    parser.add_argument("--compile", action="store_true",
                        help="add a torch.compile row (mode='default', dynamic=False) to the ablation")
    parser.add_argument("--compile-timeout", type=float, default=300.0,
                        help="seconds allowed for the torch.compile warm-up; longer = reported as not measured")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from util.inputs import check_known_flag_values, check_number_flags
    from util.outdir import check_out_files

    check_out_files([("--json", args.json)], args.overwrite)  # before any timing

    check_known_flag_values("--variants", args.variants, [label for label, *_ in VARIANTS])
    check_number_flags(args, {
        "--threads": (1, True, False),
        "--iters": (1, True, False),
        "--train-batch": (1, True, False),
        "--infer-batch": (1, True, False),
        "--rounds": (1, True, False),
        "--compile-timeout": (0.0, False, True),
    })
    torch.set_num_threads(args.threads)

    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    results = []
    for name in args.configs:
        if not (CONFIG_DIR / f"{name}.yaml").exists():
            results.append({"config": name, "error": f"no {CONFIG_DIR / name}.yaml"})
            continue
        cmd = [sys.executable, "-m", "benchmarks.task2_models", "--worker", name,
               "--threads", str(args.threads), "--iters", str(args.iters),
               "--train-batch", str(args.train_batch), "--infer-batch", str(args.infer_batch)]
        if args.quick:
            cmd.append("--quick")
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            results.append({"config": name, "error": last})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if results:
        _print_table(results)

    rows, peaks = [], {}
    if args.ablation_config != "none":
        print(f"\nCAT-WaveNet optimisation ablation ({args.ablation_config}; train batch {args.train_batch} "
              f"windows, infer batch {args.infer_batch} x 30 s; speed-up = plain time / variant time)")
        rows, peaks = ablation(args.ablation_config, args)
        _print_ablation(rows, peaks, args.rounds)
    if args.json:
        from util.atomic import atomic_write_json

        atomic_write_json(args.json, {"configs": results, "ablation": rows, "ablation_peaks": peaks})


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
