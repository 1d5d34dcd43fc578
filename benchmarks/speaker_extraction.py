"""Speed and memory benchmark of the NeuroSpex speaker-extraction models on CPU.

For each config: parameter counts, inference latency per 4-s window and
real-time factor (processing time / audio duration; eval + no_grad, batch 1)
with 1 and 2 threads, training throughput (4-s windows/s for
forward + backward + Adam on one batch), and peak resident memory (ru_maxrss).
Every measurement runs in its own subprocess so the peak memory belongs to
that config and that mode alone.  CPU time is printed next to wall time:
when CPU/wall is well below the thread count, other processes were competing
for the cores and the wall-clock figures are pessimistic.

    python -m benchmarks.speaker_extraction                 # paper + small configs
    python -m benchmarks.speaker_extraction --quick         # fewer repeats
    python -m benchmarks.speaker_extraction --params-only   # parameter table only
    python -m benchmarks.speaker_extraction --train-speed   # small config: before/after training cost

``--train-speed`` measures, side by side in one run and in the same way
(1 thread, one optimizer step of the config's global batch), the training cost
per window of the small model as it was first committed (``small_before``:
L=32, full 4-s windows) and of ``neurospex_small.yaml`` now (L=64, trained on
``train.crop_s`` crops), and prints the ratio.

``--paths`` times, for each config in one process, the plain fp32 path (``conv_impl: native``, the
per-tensor Adam loop) against the fast paths (GEMM/channel-last convs, make_adam, fp32 or bf16 via
util.trainer.set_precision, the mechanism the trainer uses), interleaved round by round with the fp32
and bf16 matmul peaks (benchmarks/speed.py): training step (batch ``--train-batch`` of
``--window-s`` windows) and batch-1 inference (real-time factor), each with its ratio to plain
(median, 25-75 % range of the per-round ratios) and % of the peak of the precision in use.
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/speaker_extraction.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "speaker_extraction" / "configs"
FS_AUDIO, FS_EEG = 8000, 128


def resolve_config(name: str) -> Path:
    """A config name from speaker_extraction/configs (without .yaml) or a YAML path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    return CONFIG_DIR / f"{name}.yaml"


# neurospex_small.yaml as first committed (3714bfe..0edc223): 4-s training windows, batch 8
SMALL_BEFORE = {"type": "neurospex", "N": 64, "L": 32, "B": 64, "H": 128, "P": 3, "X": 3, "R": 2, "eeg_channels": 64,
                "eeg_dim": 64, "adc_blocks": 2, "eeg_heads": 1, "attn_heads": 2, "adc_kernel": 9}


def load_model_config(name: str) -> dict:
    from util.config import load_config
    from util.errors import EEGKitError

    if name == "small_before":
        return dict(SMALL_BEFORE)
    config = load_config(resolve_config(name))
    if not isinstance(config.get("model"), dict):
        raise EEGKitError(f"{resolve_config(name)}: no 'model:' section")
    return config["model"]


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_inputs(batch: int, window_s: float, eeg_channels: int, generator):
    import torch

    mixture = torch.randn(batch, int(window_s * FS_AUDIO), generator=generator)  # (batch, samples)
    eeg = torch.randn(batch, int(window_s * FS_EEG), eeg_channels, generator=generator)  # (batch, time, C)
    target = torch.randn(batch, int(window_s * FS_AUDIO), generator=generator)  # (batch, samples)
    return mixture, eeg, target


def worker(args: argparse.Namespace) -> dict:
    """Run one measurement in this process and return the figures as a dict."""
    import torch

    from speaker_extraction.models import build_model

    torch.set_num_threads(args.worker_threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model_cfg = load_model_config(args.worker)
    model = build_model(model_cfg)
    rss_after_build = peak_rss_mib()
    result = {"config": args.worker, "mode": args.mode, "threads": args.worker_threads}

    if args.mode == "infer":
        model.eval()
        mixture, eeg, _ = make_inputs(1, args.window_s, model.eeg_channels, generator)
        latencies, cpu_times = [], []
        with torch.no_grad():
            model(mixture, eeg)  # warm-up
            for _ in range(args.repeats):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                model(mixture, eeg)
                latencies.append(time.perf_counter() - wall0)
                cpu_times.append(time.process_time() - cpu0)
        latency = statistics.median(latencies)
        result.update(latency_s=latency, rtf=latency / args.window_s, cpu_s=statistics.median(cpu_times))
    else:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        mixture, eeg, target = make_inputs(args.train_batch, args.window_s, model.eeg_channels, generator)

        def step():
            optimizer.zero_grad(set_to_none=True)
            estimate = model(mixture, eeg)  # (batch, samples)
            loss = (estimate - target).pow(2).mean()
            loss.backward()
            optimizer.step()

        step()  # warm-up (allocates Adam state)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(args.train_steps):
            step()
        wall = time.perf_counter() - wall0
        result.update(windows_per_s=args.train_batch * args.train_steps / wall,
                      step_s=wall / args.train_steps, cpu_s=(time.process_time() - cpu0) / args.train_steps)
    result.update(rss_build_mib=rss_after_build, peak_rss_mib=peak_rss_mib())
    return result


def run_worker(config: str, mode: str, threads: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "benchmarks.speaker_extraction", "--worker", config, "--mode", mode,
               "--worker-threads", str(threads), "--repeats", str(args.repeats), "--train-batch", str(args.train_batch),
               "--train-steps", str(args.train_steps), "--window-s", str(args.window_s)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({config}, {mode}, {threads} threads):\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def parameter_table(configs: Sequence[str]) -> list[str]:
    from speaker_extraction.models import build_model
    from util.training import count_parameters

    lines = [f"{'config':<24}{'adc_blocks':>11}{'params':>12}"]
    for name in configs:
        model_cfg = load_model_config(name)
        depths = [model_cfg.get("adc_blocks", 6)]
        if name == "neurospex" and 4 not in depths:
            depths.append(4)  # the released code's default, reference ~5.06 M
        for depth in depths:
            count = count_parameters(build_model({**model_cfg, "adc_blocks": depth}))
            lines.append(f"{name:<24}{depth:>11}{count:>12,}")
    return lines


def train_speed(args: argparse.Namespace) -> int:
    """Training seconds per 4-s window of data: small config before vs after, same machine, same run."""
    from util.config import load_config

    small = load_config(CONFIG_DIR / "neurospex_small.yaml")
    crop_s = float(small["train"].get("crop_s", 0.0)) or 4.0
    cases = [("small_before", 4.0, 8), ("neurospex_small", crop_s, int(small["train"]["batch_size"]))]
    rows = []
    for _ in range(max(1, args.rounds)):  # interleaved rounds: both see the same machine load
        for name, window_s, batch in cases:
            worker_args = argparse.Namespace(**{**vars(args), "window_s": window_s, "train_batch": batch})
            row = run_worker(name, "train", 1, worker_args)
            row.update(window_s=window_s, batch=batch, s_per_window=row["step_s"] / batch)
            rows.append(row)
    print(f"training step cost, 1 thread, {args.train_steps} timed steps x {max(1, args.rounds)} rounds")
    print(f"{'config':<18}{'train window s':>15}{'batch':>7}{'step s':>9}{'s/window':>10}{'cpu/wall':>9}")
    for row in rows:
        print(f"{row['config']:<18}{row['window_s']:>15g}{row['batch']:>7}{row['step_s']:>9.3f}"
              f"{row['s_per_window']:>10.3f}{row['cpu_s'] / row['step_s']:>9.2f}")
    best = {name: min(r["s_per_window"] for r in rows if r["config"] == name) for name, _, _ in cases}
    print(f"speed-up per training window (best of rounds): {best['small_before'] / best['neurospex_small']:.1f}x "
          f"({best['small_before']:.3f} -> {best['neurospex_small']:.3f} s)")
    if args.json_out is not None:
        from util.atomic import atomic_write_json

        atomic_write_json(args.json_out, {"train_speed": rows, "best_s_per_window": best})
    return 0


PATHS = [  # (label, conv_impl, precision, fast Adam); the first is the reference
    ("plain fp32", "native", "fp32", False),
    ("fast fp32 native conv", "native", "fp32", True),
    ("fast fp32 gemm conv", "gemm", "fp32", True),
    ("fast bf16 native conv", "native", "bf16", True),
    ("fast bf16 gemm conv", "gemm", "bf16", True),
]


def paths(args: argparse.Namespace) -> int:
    """Plain vs fast paths per config, interleaved with the matmul peaks in this process."""
    import torch

    from benchmarks.speed import count_flops, flop_count_lines, fmt_range, interleave, peak_fns, peak_rows, summary
    from speaker_extraction.models import build_model
    from util.trainer import make_adam, set_precision

    torch.set_num_threads(args.train_threads)
    report = {}
    for name in args.configs:
        model_cfg = load_model_config(name)
        torch.manual_seed(0)
        state = build_model({**model_cfg, "conv_impl": "native"}).state_dict()
        generator = torch.Generator().manual_seed(0)
        wanted = [p for p in PATHS if not args.variants or p[0] in args.variants]
        fns, flops, flops_old = {}, {}, {}
        for label, impl, precision, fast_adam in wanted:
            train_model = set_precision(build_model({**model_cfg, "conv_impl": impl}), precision)
            train_model.load_state_dict(state)
            infer_model = set_precision(build_model({**model_cfg, "conv_impl": impl}), precision)
            infer_model.load_state_dict(state)
            infer_model.eval()
            mixture, eeg, target = make_inputs(args.train_batch, args.window_s, train_model.eeg_channels, generator)
            one_mixture, one_eeg = mixture[:1].clone(), eeg[:1].clone()
            optimizer = (make_adam(train_model.parameters(), 1e-4, (0.9, 0.999)) if fast_adam
                         else torch.optim.Adam(train_model.parameters(), lr=1e-4, foreach=False))

            def step(model=train_model, optimizer=optimizer, mixture=mixture, eeg=eeg, target=target):
                optimizer.zero_grad(set_to_none=True)
                loss = (model(mixture, eeg) - target).pow(2).mean()
                loss.backward()
                optimizer.step()

            def infer(model=infer_model, mixture=one_mixture, eeg=one_eeg):
                with torch.no_grad():
                    model(mixture, eeg)

            fns[f"{label}|train"], fns[f"{label}|infer"] = step, infer
            flops[f"{label}|train"], flops[f"{label}|infer"] = count_flops(step), count_flops(infer)
            flops_old[f"{label}|train"] = count_flops(step, in_place=False)
            flops_old[f"{label}|infer"] = count_flops(infer, in_place=False)
        peaks, peak_flops = peak_fns()
        fns["peak fp32"], fns["peak bf16"] = peaks["fp32"], peaks["bf16"]
        print(f"{name}: {args.rounds} interleaved rounds ...", file=sys.stderr, flush=True)
        times = interleave(fns, args.rounds)
        rows = []
        for label, _, precision, _ in wanted:
            row = {"variant": label, "precision": precision}
            for kind in ("train", "infer"):
                row[kind] = summary(times, f"{label}|{kind}", reference=f"{wanted[0][0]}|{kind}",
                                    flops=flops[f"{label}|{kind}"], peak_label=f"peak {precision}",
                                    peak_flops=peak_flops)
                row[kind]["times"] = times[f"{label}|{kind}"]
                row[kind].update(flops=flops[f"{label}|{kind}"], flops_old=flops_old[f"{label}|{kind}"])
            row["infer"]["rtf"] = row["infer"]["s"] / args.window_s
            rows.append(row)
        peak = peak_rows(times, peak_flops)
        report[name] = {"rows": rows, "peaks": peak}
        print(f"\n{name}: {args.train_threads} threads, train batch {args.train_batch} x {args.window_s:g} s, "
              f"inference batch 1 x {args.window_s:g} s; {args.rounds} interleaved rounds; medians; x = plain fp32 "
              f"time / variant time (25-75 % range of per-round ratios); %peak of the variant's precision")
        print("matmul peak (2048^2, best of 3 per round): " + ", ".join(
            f"{k} {v['gflops']:.0f} GFLOP/s ({fmt_range(v['iqr'])})" for k, v in peak.items()))
        print(f"{'variant':24s}{'train s':>9s}{'x plain':>8s}{'(IQR)':>11s}{'GF/s':>7s}{'%peak':>7s}"
              f"{'infer s':>9s}{'RTF':>7s}{'x plain':>8s}{'(IQR)':>11s}{'%peak':>7s}")
        for row in rows:
            t, i = row["train"], row["infer"]
            print(f"{row['variant']:24s}{t['s']:>9.3f}{t['ratio']:>8.2f}{fmt_range(t['ratio_iqr']):>11s}"
                  f"{t['gflops']:>7.1f}{t['pct_peak']:>7.1f}{i['s']:>9.3f}{i['rtf']:>7.3f}{i['ratio']:>8.2f}"
                  f"{fmt_range(i['ratio_iqr']):>11s}{i['pct_peak']:>7.1f}")
        print("\n".join(flop_count_lines(rows)))
    if args.json_out is not None:
        from util.atomic import atomic_write_json

        atomic_write_json(args.json_out, {"paths": report})
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["neurospex", "neurospex_small"],
                        help="config names in speaker_extraction/configs (without .yaml) or YAML paths")
    parser.add_argument("--quick", action="store_true",
                        help="fast run: 2 timed inference repeats, 1 timed training step of batch 2")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch.set_num_threads values for the inference measurements")
    parser.add_argument("--train-threads", type=int, default=2, help="threads for the training measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference runs (median reported)")
    parser.add_argument("--train-batch", type=int, default=4, help="4-s windows per training batch")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="--train-speed: interleaved rounds per config")
    parser.add_argument("--window-s", type=float, default=4.0, help="window length in seconds")
    parser.add_argument("--no-train", action="store_true", help="skip the training measurement")
    parser.add_argument("--train-speed", action="store_true",
                        help="compare the small config's training cost before/after the speed work (1 thread)")
    parser.add_argument("--paths", action="store_true",
                        help="plain fp32 vs fast paths (conv_impl, bf16, make_adam) per config, interleaved "
                             "with the matmul peaks in one process (uses --train-threads, --rounds)")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="--paths: variant labels to time (the first is the reference); default all")
    parser.add_argument("--params-only", action="store_true", help="print the parameter table and exit")
    parser.add_argument("--json-out", type=Path, default=None, help="also write all figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json-out file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["infer", "train"], default="infer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from util.inputs import check_known_flag_values, check_number_flags
    from util.outdir import check_out_files

    check_out_files([("--json-out", args.json_out)], args.overwrite)  # before any timing

    check_known_flag_values("--variants", args.variants, [label for label, *_ in PATHS])
    check_number_flags(args, {
        "--threads": (1, True, False),
        "--train-threads": (1, True, False),
        "--repeats": (1, True, False),
        "--train-batch": (1, True, False),
        "--train-steps": (1, True, False),
        "--rounds": (1, True, False),
        "--window-s": (0.0, False, True),
        "--worker-threads": (1, True, False),
    })
    if args.quick:
        args.repeats, args.train_steps, args.train_batch = 2, 1, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0
    for name in args.configs:
        load_model_config(name)  # fail early with a one-line error on a bad config
    if args.train_speed:
        return train_speed(args)
    if args.paths:
        return paths(args)
    print("\n".join(parameter_table(args.configs)))
    if args.params_only:
        return 0

    import os

    print(f"\nCPU benchmark, {args.window_s:g}-s windows, {os.cpu_count()} visible cores "
          f"(shared machine: wall times are noisy; cpu/wall << threads means contention)")
    from tqdm import tqdm

    jobs = [(name, "infer", threads) for name in args.configs for threads in args.threads]
    if not args.no_train:
        jobs += [(name, "train", args.train_threads) for name in args.configs]
    results = [run_worker(name, mode, threads, args) for name, mode, threads in tqdm(jobs, desc="benchmark")]

    print(f"\n{'config':<18}{'mode':<7}{'thr':>4}{'latency s':>11}{'RTF':>8}{'cpu/wall':>9}"
          f"{'win/s':>8}{'step s':>8}{'rss build MiB':>14}{'peak MiB':>10}")
    for row in results:
        if row["mode"] == "infer":
            timing = f"{row['latency_s']:>11.3f}{row['rtf']:>8.3f}{row['cpu_s'] / row['latency_s']:>9.2f}{'':>8}{'':>8}"
        else:
            label = f"b={args.train_batch}"
            timing = (f"{label:>11}{'':>8}{row['cpu_s'] / row['step_s']:>9.2f}"
                      f"{row['windows_per_s']:>8.2f}{row['step_s']:>8.2f}")
        print(f"{row['config']:<18}{row['mode']:<7}{row['threads']:>4}{timing}"
              f"{row['rss_build_mib']:>14.0f}{row['peak_rss_mib']:>10.0f}")
    if args.json_out is not None:
        from util.atomic import atomic_write_json

        atomic_write_json(args.json_out, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results})
    return 0


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
