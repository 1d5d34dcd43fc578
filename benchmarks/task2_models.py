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
  GFLOP/s        FLOPs counted with torch.utils.flop_counter.FlopCounterMode
                 (matmul/conv/attention only) divided by the measured time, and as a
                 percentage of this CPU's float32 matmul peak (timed first).
Then the CAT-WaveNet ablation (variants timed interleaved for `--rounds` rounds in a
rotating order; median time, speed-up = plain median / variant median, with the 25-75 %
range of the per-round ratios as the spread) (`--ablation-config`, default cat_wavenet_small):
plain reference path vs each optimisation, all in one process, as speed-up ratios
over plain: fused gate, SDPA attention, folded weight norm (inference only), all
three, chunked attention, and with `--compile` / `--bf16` torch.compile (mode='default',
dynamic=False; its warm-up limited to `--compile-timeout` s, otherwise reported as not
measured) and bf16 autocast on top of the fast path.

Example: python -m benchmarks.task2_models --quick --threads 2
"""
from __future__ import annotations

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
from tqdm import tqdm

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


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul throughput (GFLOP/s) over `repeats` timings of size x size."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def build(name: str, overrides: dict | None = None):
    """Model of config `name` with all its targets; returns (model, config)."""
    from task2_regression.models import build_model
    from util.features import BANDS

    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    targets = cfg.get("targets") or [cfg["target"]]
    model_cfg = dict(cfg["model"], **(overrides or {}))
    return build_model(model_cfg, {t: BANDS[t] for t in targets}), cfg


def _count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def _time(fn, iters: int) -> float:
    """Seconds per call (one warm-up call first)."""
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def _train_step_fn(model, batch: int, n_samples: int):
    eeg = torch.randn(batch, n_samples, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
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
    """Measure one config (run in a fresh subprocess)."""
    torch.manual_seed(0)
    model, cfg = build(name)
    if not any(p.requires_grad for p in model.parameters()):
        raise SystemExit(f"{name}: model has no trainable parameters")
    rss_built = _current_rss_mib()
    n_params = sum(p.numel() for p in model.parameters())
    paper = name == "cat_wavenet"
    train_batch = 1 if paper else args.train_batch
    infer_batch = 1 if paper else args.infer_batch
    iters = 1 if paper else args.iters
    train_samples = int(round(float(cfg.get("data", {}).get("window_s", 5.0)) * FS))
    if paper and args.quick:
        train_samples = 5 * FS  # 30-s windows x 90 M parameters is minutes per step on 2 cores
    step = _train_step_fn(model, train_batch, train_samples)
    train_flops = _count_flops(step)
    train_s = _time(step, iters)
    model.eval()
    if hasattr(model, "fold_weight_norm"):
        model.fold_weight_norm()
    infer = _infer_fn(model, infer_batch, 30 * FS)
    infer_flops = _count_flops(infer)
    infer_s = _time(infer, iters)
    return {
        "config": name, "params": n_params, "train_window_s": train_samples / FS,
        "train_batch": train_batch, "train_windows_per_s": train_batch / train_s,
        "train_gflops": train_flops / train_s / 1e9,
        "infer_batch": infer_batch, "infer_segments_per_s": infer_batch / infer_s,
        "infer_gflops": infer_flops / infer_s / 1e9,
        "peak_rss_mib": _rss_mib(), "rss_growth_mib": _rss_mib() - rss_built,
    }


def ablation(name: str, args) -> list[dict]:
    """Plain vs optimised CAT-WaveNet paths, same weights, side by side in one process."""
    torch.manual_seed(0)
    base, cfg = build(name, {"fast": False, "attention_chunk": None})
    chunk = cfg["model"].get("attention_chunk") or 640
    train_samples = int(round(float(cfg["data"]["window_s"]) * FS))
    state = base.state_dict()
    variants = [
        ("plain", dict(fused_gate=False, attention_impl="plain", attention_chunk=None), False),
        ("fused gate", dict(fused_gate=True, attention_impl="plain", attention_chunk=None), False),
        ("SDPA attention", dict(fused_gate=False, attention_impl="sdpa", attention_chunk=None), False),
        ("folded weight norm", dict(fused_gate=False, attention_impl="plain", attention_chunk=None), True),
        ("fast (gate+SDPA+fold)", dict(fused_gate=True, attention_impl="sdpa", attention_chunk=None), True),
        (f"fast + chunk {chunk}", dict(fused_gate=True, attention_impl="sdpa", attention_chunk=chunk), True),
    ]
    extra = []  # on top of the path the config trains with (fast + its attention chunk)
    if args.bf16:
        extra.append((f"fast + chunk {chunk} + bf16", "bf16"))
    if args.compile:
        extra.append((f"fast + chunk {chunk} + compile", "compile"))
    rows = []

    def fresh(speed: dict, bf16: bool = False, compile_model: bool = False):
        model, _ = build(name, {"fast": False})
        model.load_state_dict(state)
        model.set_speed(**speed)
        model.bf16 = bf16
        return model

    fast_speed = dict(fused_gate=True, attention_impl="sdpa", attention_chunk=chunk)
    specs = [(label, speed, fold, {}) for label, speed, fold in variants]
    for label, kind in extra:
        specs.append((label, fast_speed, True, {"bf16": kind == "bf16", "compile_model": kind == "compile"}))
    # One training model and one (eval, maybe folded) inference model per variant.
    runners, skipped = [], []
    for label, speed, fold, options in specs:
        compile_model = options.pop("compile_model", False)
        train_model, infer_model = fresh(speed, **options), fresh(speed, **options)
        infer_model.eval()
        if fold:  # folding only matters at inference; training keeps weight norm
            infer_model.fold_weight_norm()
        if compile_model:
            train_model = torch.compile(train_model, mode="default", dynamic=False)
            infer_model = torch.compile(infer_model, mode="default", dynamic=False)
        train_fn = _train_step_fn(train_model, args.train_batch, train_samples)
        infer_fn = _infer_fn(infer_model, args.infer_batch, 30 * FS)
        if compile_model:
            warm, why = _warm_up_with_limit((train_fn, infer_fn), args.compile_timeout)
            if warm is None:
                skipped.append({"variant": label, "error": f"not measured: {why}"})
                continue
            print(f"  {label}: compile warm-up {warm:.0f} s", file=sys.stderr, flush=True)
        else:
            train_fn(), infer_fn()  # warm-up
        runners.append((label, train_fn, infer_fn))
    # Interleave the variants round by round (the order rotates every round) so load from other
    # processes on this shared machine hits all variants alike; report median and spread.
    times = {label: ([], []) for label, _, _ in runners}
    for round_index in tqdm(range(args.rounds), desc="ablation rounds", file=sys.stderr):
        shift = round_index % len(runners)
        for label, train_fn, infer_fn in runners[shift:] + runners[:shift]:
            for slot, fn in enumerate((train_fn, infer_fn)):
                start = time.perf_counter()
                fn()
                times[label][slot].append(time.perf_counter() - start)
    rows = []
    for label, _, _ in runners:
        train_t, infer_t = (np.asarray(v) for v in times[label])
        rows.append({"variant": label, "train_s": float(np.median(train_t)), "infer_s": float(np.median(infer_t)),
                     "train_times": train_t.tolist(), "infer_times": infer_t.tolist()})
    plain = rows[0]
    plain_train, plain_infer = np.asarray(plain["train_times"]), np.asarray(plain["infer_times"])
    for row in rows:
        row["train_speedup"] = plain["train_s"] / row["train_s"]
        row["infer_speedup"] = plain["infer_s"] / row["infer_s"]
        # spread: the 25-75 % range of the per-round ratios (same round, plain time / variant time)
        for kind, ref in (("train", plain_train), ("infer", plain_infer)):
            ratios = ref / np.asarray(row[f"{kind}_times"])
            row[f"{kind}_ratio_iqr"] = [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]
            spread = np.asarray(row[f"{kind}_times"])
            row[f"{kind}_cv"] = float(spread.std() / spread.mean())
    return rows + skipped


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


def _print_table(results: list[dict], peak: float) -> None:
    print(f"\nfloat32 matmul peak on this CPU: {peak:.1f} GFLOP/s")
    header = (f"{'config':20s} {'params':>11s} {'train win/s':>12s} {'(win s, batch)':>14s} "
              f"{'infer seg/s':>11s} {'peak RSS MiB':>12s} {'RSS growth':>10s} "
              f"{'train GF/s':>10s} {'%peak':>6s} {'infer GF/s':>10s} {'%peak':>6s}")
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['config']:20s} not measured: {r['error']}")
            continue
        print(f"{r['config']:20s} {r['params']:>11,d} {r['train_windows_per_s']:>12.2f} "
              f"{'(%g, %d)' % (r['train_window_s'], r['train_batch']):>14s} "
              f"{r['infer_segments_per_s']:>11.2f} {r['peak_rss_mib']:>12.0f} {r['rss_growth_mib']:>10.0f} "
              f"{r['train_gflops']:>10.2f} {100 * r['train_gflops'] / peak:>6.1f} "
              f"{r['infer_gflops']:>10.2f} {100 * r['infer_gflops'] / peak:>6.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS,
                        help="run configs (names in task2_regression/configs) to measure")
    parser.add_argument("--quick", action="store_true",
                        help="1 timed iteration; paper-size cat_wavenet trains on 5-s windows, batch 1")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads in every process")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per measurement (after 1 warm-up)")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch (windows); 1 for paper size")
    parser.add_argument("--infer-batch", type=int, default=4, help="inference batch (30-s segments); 1 for paper size")
    parser.add_argument("--ablation-config", default="cat_wavenet_small",
                        help="CAT-WaveNet config for the optimisation ablation ('none' to skip)")
    parser.add_argument("--rounds", type=int, default=9,
                        help="ablation: interleaved timing rounds (rotating order); the median is reported with "
                             "the 25-75 %% range of the per-round ratios against plain")
    parser.add_argument("--compile", action="store_true",
                        help="add a torch.compile row (mode='default', dynamic=False) to the ablation")
    parser.add_argument("--compile-timeout", type=float, default=300.0,
                        help="seconds allowed for the torch.compile warm-up; longer = reported as not measured")
    parser.add_argument("--bf16", action="store_true", help="add a bf16-autocast row to the ablation")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from util.inputs import check_number_flags

    check_number_flags(args, {
        "--threads": (1, True, False),
        "--iters": (1, True, False),
        "--train-batch": (1, True, False),
        "--infer-batch": (1, True, False),
        "--rounds": (1, True, False),
        "--compile-timeout": (0.0, False, True),
    })
    if args.quick:
        args.iters = 1
    torch.set_num_threads(args.threads)

    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    peak = matmul_peak_gflops()
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
    _print_table(results, peak)

    rows = []
    if args.ablation_config != "none":
        print(f"\nCAT-WaveNet optimisation ablation ({args.ablation_config}; train batch {args.train_batch} "
              f"windows, infer batch {args.infer_batch} x 30 s; speed-up = plain time / variant time)")
        rows = ablation(args.ablation_config, args)
        print(f"{args.rounds} interleaved rounds; medians; 'IQR' = 25-75 % range of the per-round ratios; "
              f"'cv' = std/mean of the variant's own times")
        print(f"{'variant':26s} {'train s/step':>12s} {'train x':>8s} {'train IQR':>12s} {'cv':>5s} "
              f"{'infer s/batch':>13s} {'infer x':>8s} {'infer IQR':>12s} {'cv':>5s}")
        for row in rows:
            if "error" in row:
                print(f"{row['variant']:26s} {row['error']}")
                continue
            print(f"{row['variant']:26s} {row['train_s']:>12.3f} {row['train_speedup']:>8.2f} "
                  f"{'%.2f-%.2f' % tuple(row['train_ratio_iqr']):>12s} {row['train_cv']:>5.2f} "
                  f"{row['infer_s']:>13.3f} {row['infer_speedup']:>8.2f} "
                  f"{'%.2f-%.2f' % tuple(row['infer_ratio_iqr']):>12s} {row['infer_cv']:>5.2f}")
    if args.json:
        from util.atomic import atomic_write_json

        atomic_write_json(args.json, {"matmul_peak_gflops": peak, "configs": results, "ablation": rows})


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
