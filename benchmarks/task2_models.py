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
Then the CAT-WaveNet ablation (variants timed interleaved for `--rounds` rounds,
fastest kept) (`--ablation-config`, default cat_wavenet_small):
plain reference path vs each optimisation, all in one process, as speed-up ratios
over plain: fused gate, SDPA attention, folded weight norm (inference only), all
three, chunked attention, and with `--compile` / `--bf16` torch.compile and bf16
autocast on top of the fast path.

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

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIG_DIR = REPO / "task2_regression" / "configs"
BANDS = {"envelope": 1, "mel": 10, "mel80": 80, "mag": 257}
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
    extra = []
    if args.bf16:
        extra.append(("fast + bf16 autocast", "bf16"))
    if args.compile:
        extra.append(("fast + torch.compile", "compile"))
    rows = []

    def fresh(speed: dict, bf16: bool = False, compile_model: bool = False):
        model, _ = build(name, {"fast": False})
        model.load_state_dict(state)
        model.set_speed(**speed)
        model.bf16 = bf16
        return model

    fast_speed = dict(fused_gate=True, attention_impl="sdpa", attention_chunk=None)
    specs = [(label, speed, fold, {}) for label, speed, fold in variants]
    for label, kind in extra:
        specs.append((label, fast_speed, True, {"bf16": kind == "bf16", "compile_model": kind == "compile"}))
    # One training model and one (eval, maybe folded) inference model per variant.
    runners = []
    for label, speed, fold, options in specs:
        train_model, infer_model = fresh(speed, **options), fresh(speed, **options)
        infer_model.eval()
        if fold:  # folding only matters at inference; training keeps weight norm
            infer_model.fold_weight_norm()
        if options.get("compile_model"):
            train_model, infer_model = torch.compile(train_model), torch.compile(infer_model)
        train_fn = _train_step_fn(train_model, args.train_batch, train_samples)
        infer_fn = _infer_fn(infer_model, args.infer_batch, 30 * FS)
        train_fn(), infer_fn()  # warm-up (and compilation)
        runners.append((label, train_fn, infer_fn))
    # Interleave the variants round by round and keep each one's fastest time, so
    # load from other processes on this shared machine hits all variants alike.
    best = {label: [float("inf"), float("inf")] for label, _, _ in runners}
    for _ in range(args.rounds):
        for label, train_fn, infer_fn in runners:
            for slot, fn in enumerate((train_fn, infer_fn)):
                start = time.perf_counter()
                fn()
                best[label][slot] = min(best[label][slot], time.perf_counter() - start)
    rows = [{"variant": label, "train_s": best[label][0], "infer_s": best[label][1]}
            for label, _, _ in runners]
    plain = rows[0]
    for row in rows:
        row["train_speedup"] = plain["train_s"] / row["train_s"]
        row["infer_speedup"] = plain["infer_s"] / row["infer_s"]
    return rows


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
    parser.add_argument("--rounds", type=int, default=3,
                        help="ablation: interleaved timing rounds (fastest of them is kept)")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row to the ablation")
    parser.add_argument("--bf16", action="store_true", help="add a bf16-autocast row to the ablation")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
        print(f"{'variant':26s} {'train s/step':>12s} {'train x':>8s} {'infer s/batch':>13s} {'infer x':>8s}")
        for row in rows:
            print(f"{row['variant']:26s} {row['train_s']:>12.3f} {row['train_speedup']:>8.2f} "
                  f"{row['infer_s']:>13.3f} {row['infer_speedup']:>8.2f}")
    if args.json:
        from util.atomic import atomic_write_json

        atomic_write_json(args.json, {"matmul_peak_gflops": peak, "configs": results, "ablation": rows})


if __name__ == "__main__":
    main()
