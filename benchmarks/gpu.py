"""GPU benchmark (one prepared script, <= 8 min): paper-size CAT-WaveNet and NeuroSpex on CUDA.

For each model and each path -- fp32, bf16 autocast (util.trainer.set_precision, as the trainer runs it)
and bf16 + ``torch.compile`` -- it measures:
  training windows/s   forward + backward + Adam (make_adam: fused on CUDA) on a batch (CAT-WaveNet: --cat-batch x 30-s
                       windows; NeuroSpex: --se-batch x 4-s windows), median of --steps timed steps;
  inference RTF        seconds per second of input, batch 1 (30-s EEG segment / 4-s mixture), no_grad;
  peak GPU memory      torch.cuda.max_memory_allocated over that path's training and inference (MiB).
``conv_impl`` is ``auto`` (cuDNN on CUDA). Each path stops being measured once --budget-s is spent (the
rest are listed as not measured), so the whole script stays within its budget. The report goes to
--out (default results/gpu.txt) and, with --json, to a JSON file.

Where CUDA is absent it writes the one line saying so to --out and exits 0.

    python -m benchmarks.gpu --overwrite      # on a CUDA machine (--overwrite: replace results/gpu.txt)
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/gpu.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FS_EEG_TASK2, FS_AUDIO, FS_EEG_SE = 64, 8000, 128
PATHS = ("fp32", "bf16", "bf16 + compile")


def _cat_wavenet():
    from benchmarks.task2_models import build

    model, _ = build("cat_wavenet")
    return model


def _neurospex():
    from speaker_extraction.models import build_model
    from util.config import load_config

    return build_model(load_config(REPO / "speaker_extraction" / "configs" / "neurospex.yaml")["model"])


def _inputs(kind: str, batch: int, device):
    if kind == "cat_wavenet":
        return (torch.randn(batch, 30 * FS_EEG_TASK2, 64, device=device),), 30.0
    return (torch.randn(batch, 4 * FS_AUDIO, device=device), torch.randn(batch, 4 * FS_EEG_SE, 64, device=device)), 4.0


def _loss(output) -> torch.Tensor:
    if isinstance(output, dict):
        return sum(o.float().square().mean() for o in output.values())
    return output.float().square().mean()


def measure(kind: str, path: str, args, device) -> dict:
    from util.trainer import make_adam, set_precision

    torch.manual_seed(0)
    model = (_cat_wavenet() if kind == "cat_wavenet" else _neurospex()).to(device)
    set_precision(model, "fp32" if path == "fp32" else "bf16")
    runner = torch.compile(model, mode="default", dynamic=False) if "compile" in path else model
    optimizer = make_adam(model.parameters(), 1e-4, (0.9, 0.999))
    batch = args.cat_batch if kind == "cat_wavenet" else args.se_batch
    train_inputs, seconds = _inputs(kind, batch, device)
    infer_inputs, _ = _inputs(kind, 1, device)
    torch.cuda.reset_peak_memory_stats(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        _loss(runner(*train_inputs)).backward()
        optimizer.step()

    def timed(fn, n):
        out = []
        for _ in range(n):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize(device)
            out.append(time.perf_counter() - start)
        return statistics.median(out)

    warm = time.perf_counter()
    model.train()
    step()  # warm-up (compiles on the compile path)
    step_s = timed(step, args.steps)
    model.eval()

    def infer():
        with torch.no_grad():
            runner(*infer_inputs)

    infer()
    infer_s = timed(infer, args.steps)
    return {"model": kind, "path": path, "train_windows_per_s": batch / step_s, "train_step_s": step_s,
            "train_batch": batch, "window_s": seconds, "infer_rtf": infer_s / seconds,
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "wall_s": time.perf_counter() - warm}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "gpu.txt", help="report file")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out / --json files")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="stop starting new measurements after this many seconds (the script stays <= 8 min)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps / inference calls per path")
    parser.add_argument("--cat-batch", type=int, default=4, help="CAT-WaveNet training batch (30-s windows)")
    parser.add_argument("--se-batch", type=int, default=8, help="NeuroSpex training batch (4-s windows)")
    args = parser.parse_args(argv)
    from util.atomic import atomic_write_json, atomic_write_text
    from util.outdir import check_out_files

    check_out_files([("--out", args.out), ("--json", args.json)], args.overwrite)  # before any measurement

    header = f"command: python -m benchmarks.gpu  (torch {torch.__version__}, host {platform.node()})"
    if not torch.cuda.is_available():
        atomic_write_text(args.out, f"{header}\nno GPU was available: torch.cuda.is_available() is False; "
                                    f"nothing measured\n")
        print(f"no GPU was available; wrote {args.out}")
        return 0
    device = torch.device("cuda")
    started = time.perf_counter()
    rows, skipped = [], []
    for kind in ("cat_wavenet", "neurospex"):
        for path in PATHS:
            if time.perf_counter() - started > args.budget_s:
                skipped.append(f"{kind} {path}: not measured (--budget-s {args.budget_s:g} s spent)")
                continue
            try:
                rows.append(measure(kind, path, args, device))
            except Exception as error:  # e.g. compile unavailable, out of memory: say so, go on
                skipped.append(f"{kind} {path}: not measured ({type(error).__name__}: "
                               f"{str(error).strip().splitlines()[0][:120] if str(error).strip() else ''})")
            torch.cuda.empty_cache()
            print(rows[-1] if rows else skipped[-1], flush=True)
    lines = [header, f"device: {torch.cuda.get_device_name(device)}; conv_impl auto (cuDNN); median of "
             f"{args.steps} timed calls after a warm-up",
             f"{'model':12s} {'path':15s} {'train win/s':>11s} {'(batch x s)':>12s} {'step s':>8s} "
             f"{'infer RTF':>10s} {'peak MiB':>9s} {'x fp32 train':>12s}"]
    fp32 = {r["model"]: r for r in rows if r["path"] == "fp32"}
    for r in rows:
        ratio = (r["train_windows_per_s"] / fp32[r["model"]]["train_windows_per_s"]) if r["model"] in fp32 else float("nan")
        lines.append(f"{r['model']:12s} {r['path']:15s} {r['train_windows_per_s']:>11.2f} "
                     f"{'%d x %g' % (r['train_batch'], r['window_s']):>12s} {r['train_step_s']:>8.3f} "
                     f"{r['infer_rtf']:>10.4f} {r['peak_mib']:>9.0f} {ratio:>12.2f}")
    lines += skipped + [f"total {time.perf_counter() - started:.0f} s"]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "skipped": skipped})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
