"""Shared timing helpers of the speed benchmarks (benchmarks/task2_models.py, speaker_extraction.py, gpu.py).

- `peak_fns`: the fp32 and bf16 matmul peaks as callables, so a benchmark times them *in the same process,
  interleaved with the model rounds* (a peak timed once, elsewhere, under other load, is not a peak
  of the moment the model ran in). One peak call = the best of 3 square matmuls of `PEAK_SIZE`.
- `count_flops`: FLOPs of one call, every kernel: `FlopCounterMode` (matmul, conv, attention; in-place twins
  such as ``addmm_`` counted like their out-of-place ops) plus the
  CPU fused attention kernels it does not count (``_scaled_dot_product_flash_attention_for_cpu`` and its
  backward, with torch's own SDPA formulas), and the conv backward counted with ``groups`` (torch's
  formula counts a 512-channel depthwise conv's backward as a dense one). Elementwise ops are not counted.
- `interleave`: every callable once per round, the order rotating each round, for `rounds` rounds (after one
  warm-up call each); returns the per-round seconds.
- `summary`: median seconds, ratio to a reference (median of the per-round ratios' 25-75 % range too)
  and GFLOP/s with % of the same round's peak of the precision in use (median and 25-75 % range).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable

import numpy as np
import torch

PEAK_SIZE = 2048


def peak_fns(size: int = PEAK_SIZE, device: str = "cpu") -> tuple[dict[str, Callable], int]:
    """``({"fp32": fn, "bf16": fn}, flops per matmul)``; each fn returns the best seconds of 3 matmuls."""
    a = torch.randn(size, size, device=device)
    operands = {"fp32": a, "bf16": a.to(torch.bfloat16)}

    def make(x: torch.Tensor) -> Callable[[], float]:
        def call() -> float:
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                torch.mm(x, x)
                if x.is_cuda:
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
            return best
        return call

    return {name: make(x) for name, x in operands.items()}, 2 * size**3


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None) -> int:
    """Input- and weight-gradient FLOPs of a conv, each as many as its forward; grouped convs right
    (torch's own formula ignores ``groups`` here and counts a depthwise conv's backward 512x too high)."""
    per_output = math.prod(w_shape[1:])  # C_in / groups * kernel MACs per output element
    forward = 2 * per_output * math.prod(x_shape if transposed else grad_out_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _in_place_variants(registry: dict) -> dict:
    """``{aten.addmm_: formula of aten.addmm, aten.baddbmm_: ...}``: every counted op's in-place twin.

    `FlopCounterMode` registers the out-of-place ops only, so ``y.addmm_(x, w)`` (how the GEMM convs of
    `util.conv` accumulate their taps) counted 0 FLOPs. The in-place op computes the same product, so it
    gets the same formula; ``out=`` variants already dispatch to the registered overload."""
    aten = torch.ops.aten
    variants = {}
    for op, formula in registry.items():
        name = getattr(op, "__name__", "")
        twin = getattr(aten, name + "_", None) if name and not name.endswith("_") else None
        if twin is not None and twin not in registry:
            variants[twin] = formula.__wrapped__  # the raw formula: FlopCounterMode wraps custom ones again
    return variants


def count_flops(fn: Callable[[], object], in_place: bool = True) -> int:
    """FLOPs of one ``fn()`` call: in-place and out-of-place kernels alike (`_in_place_variants`), plus the
    CPU SDPA kernels `FlopCounterMode` misses. ``in_place=False`` is the count before that fix (in-place
    GEMMs uncounted), kept so the benchmarks can print the ratio of the old count to the new."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    aten = torch.ops.aten
    mapping = _in_place_variants(flop_registry) if in_place else {}
    mapping.update({aten.convolution_backward: _conv_backward_flops,
                    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
                    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops})
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    return counter.get_total_flops()


def interleave(fns: dict[str, Callable], rounds: int, progress: bool = True,
               sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Per-round seconds of every fn (a fn that returns a float reports its own seconds: the peaks)."""
    labels = list(fns)
    for label in labels:  # warm-up
        fns[label]()
    times: dict[str, list[float]] = {label: [] for label in labels}
    for index in range(rounds):
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            start = time.perf_counter()
            reported = fns[label]()
            if sync is not None:
                sync()
            elapsed = time.perf_counter() - start
            times[label].append(float(reported) if isinstance(reported, float) else elapsed)
        if progress:
            print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return times


def _iqr(values) -> list[float]:
    return [float(np.percentile(values, 25)), float(np.percentile(values, 75))]


def summary(times: dict[str, list[float]], label: str, reference: str | None = None, flops: int | None = None,
            peak_label: str | None = None, peak_flops: int | None = None) -> dict:
    """Median seconds of ``label``; ratio to ``reference`` (reference time / label time, per round);
    GFLOP/s and % of the peak in ``times[peak_label]`` of the same rounds."""
    own = np.asarray(times[label])
    row = {"s": float(np.median(own)), "iqr_s": _iqr(own)}
    if reference is not None:
        ratios = np.asarray(times[reference]) / own
        row.update(ratio=float(np.median(np.asarray(times[reference])) / np.median(own)), ratio_iqr=_iqr(ratios))
    if flops:
        row["gflops"] = flops / row["s"] / 1e9
        if peak_label is not None:
            peaks = peak_flops / np.asarray(times[peak_label]) / 1e9  # GFLOP/s per round
            share = 100.0 * (flops / own / 1e9) / peaks
            row.update(peak_gflops=float(np.median(peaks)), pct_peak=float(np.median(share)), pct_peak_iqr=_iqr(share))
    return row


def flop_count_lines(rows: list[dict]) -> list[str]:
    """Lines ``variant: train N GFLOP (old count x r), infer ...`` from rows whose train/infer cells hold
    ``flops`` and ``flops_old`` (`count_flops` with and without in-place kernels)."""
    lines = ["FLOPs per call as counted now (in-place GEMMs included) and old/new, the ratio of the count "
             "before that fix (in-place GEMMs uncounted) to the count now:"]
    for row in rows:
        cells = [f"{kind} {row[kind]['flops'] / 1e9:.2f} GFLOP (old/new {row[kind]['flops_old'] / row[kind]['flops']:.3f})"
                 for kind in ("train", "infer") if row.get(kind) and row[kind].get("flops")]
        if cells:
            lines.append(f"  {row['variant']:30s} " + ", ".join(cells))
    return lines


def peak_rows(times: dict[str, list[float]], peak_flops: int) -> dict[str, dict]:
    """``{"fp32": {gflops, iqr}, "bf16": ...}`` of the peak entries in ``times`` (labels 'peak fp32', ...)."""
    out = {}
    for name in ("fp32", "bf16"):
        label = f"peak {name}"
        if label in times:
            values = peak_flops / np.asarray(times[label]) / 1e9
            out[name] = {"gflops": float(np.median(values)), "iqr": _iqr(values)}
    return out


def fmt_range(values) -> str:
    return "%.2f-%.2f" % tuple(values)
