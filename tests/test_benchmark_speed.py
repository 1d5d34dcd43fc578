"""benchmarks/speed.py (FLOP counting with the CPU SDPA kernels, ratios/IQR, % of peak), gpu.py without CUDA, neurospex_step.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.speed import count_flops, summary


def test_count_flops_includes_cpu_sdpa():
    q = torch.randn(2, 4, 64, 16)  # (batch, heads, time, head_dim)
    # two (64 x 16) @ (16 x 64)-sized matmuls per head: 2 * 2 * b * h * L * L * d
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 4 * 2 * 4 * 64 * 64 * 16
    a, b = torch.randn(8, 5), torch.randn(5, 3)
    assert count_flops(lambda: a @ b) == 2 * 8 * 5 * 3


def test_count_flops_counts_in_place_gemms_of_the_gemm_conv():
    """The GEMM conv (util.conv) accumulates its off-centre taps with in-place ``addmm_``: counted by hand.

    x (time * batch, C_in), taps (k, C_in, C_out), dilation d: tap j multiplies the rows it reaches,
    ``rows - |o_j| * batch`` of them, 2 * C_in * C_out FLOPs each. The backward does the same GEMMs twice
    (input gradient, in place again, and weight gradient), so the whole step is 3x the forward."""
    from util.conv import conv1d_tm

    time, batch, c_in, c_out, kernel, dilation = 40, 3, 5, 7, 3, 4
    rows = time * batch
    x = torch.randn(rows, c_in, requires_grad=True)
    taps = torch.randn(kernel, c_in, c_out, requires_grad=True)
    bias = torch.randn(c_out, requires_grad=True)
    reached = [rows - abs((j - kernel // 2) * dilation) * batch for j in range(kernel)]  # [108, 120, 108]
    forward = sum(2 * r * c_in * c_out for r in reached)
    assert forward == 2 * (108 + 120 + 108) * 5 * 7
    assert count_flops(lambda: conv1d_tm(x, taps, bias, batch, dilation)) == forward
    assert count_flops(lambda: conv1d_tm(x, taps, bias, batch, dilation).sum().backward()) == 3 * forward
    c = torch.zeros(4, 6)
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    assert count_flops(lambda: c.addmm_(a, b)) == count_flops(lambda: torch.addmm(c, a, b)) == 2 * 4 * 5 * 6


def test_summary_ratio_iqr_and_percent_of_peak():
    times = {"plain": [2.0, 4.0, 2.0], "fast": [1.0, 1.0, 2.0], "peak fp32": [0.5, 0.5, 1.0]}
    row = summary(times, "fast", reference="plain", flops=10**9, peak_label="peak fp32", peak_flops=10**9)
    assert row["s"] == 1.0 and row["ratio"] == 2.0  # median 2.0 / median 1.0
    assert row["ratio_iqr"] == [pytest.approx(1.5), pytest.approx(3.0)]  # per-round ratios 2, 4, 1
    assert row["gflops"] == pytest.approx(1.0)
    # per round: model 1, 1, 0.5 GFLOP/s over peaks 2, 2, 1 GFLOP/s -> 50 % each
    assert row["pct_peak"] == pytest.approx(50.0) and row["pct_peak_iqr"] == [pytest.approx(50.0)] * 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU report")
def test_gpu_benchmark_without_cuda_writes_the_no_gpu_line(tmp_path):
    from benchmarks.gpu import main

    out = tmp_path / "gpu.txt"
    assert main(["--out", str(out)]) == 0
    assert "no GPU was available" in out.read_text()


def test_count_flops_grouped_conv_backward():
    conv = torch.nn.Conv1d(32, 32, 3, padding=1, groups=32)  # depthwise
    x = torch.randn(2, 32, 50, requires_grad=True)
    forward = 2 * 2 * 32 * 50 * 3  # 2 FLOPs per MAC, 3 MACs per output element
    assert count_flops(lambda: conv(x)) == forward
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * forward  # + input and weight gradients


def test_neurospex_step_breakdown_runs_and_refuses_bad_flags(capsys):
    from benchmarks.neurospex_step import main
    from util.errors import EEGKitError

    assert main(["--threads", "1", "--batch", "1", "--crop-s", "0.5", "--repeats", "1", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line[:42].strip(): float(line[42:51]) for line in lines[3:]}  # after the 3 header lines
    assert set(rows) >= {"EEG encoder", "one TCN block", "depthwise conv", "PReLU (util.prelu, as the block runs it)",
                         "whole step (eager)"}
    assert all(value > 0 for value in rows.values())
    assert rows["whole step (eager)"] > rows["one TCN block"]  # the step holds 12 blocks
    with pytest.raises(EEGKitError, match="--crop-s 0.1"):
        main(["--crop-s", "0.1"])
    with pytest.raises(EEGKitError, match="--config nope"):
        main(["--config", "nope"])


@pytest.mark.parametrize("flags, named", [(["--crop-s", "0.1"], "--crop-s 0.1"), (["--crop-s", "31"], "--crop-s 31"),
                                          (["--rounds", "0"], "--rounds 0"), (["--threads", "x"], "--threads"),
                                          (["--config", "nope"], "--config nope")])
def test_neurospex_step_cli_refuses_bad_flags_in_one_line(flags, named):
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "benchmarks.neurospex_step", *flags], cwd=Path(__file__).parents[1],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0]
    assert completed.stdout == ""


def test_task2_ablation_runs_its_rows_and_the_weight_norm_probe_has_no_parametrisation(capsys, monkeypatch):
    from torch.nn.utils import parametrize

    import benchmarks.task2_models as bench

    built = []
    real_build = bench.build

    def spy_build(name, overrides=None):  # record every model the ablation builds
        model, cfg = real_build(name, overrides)
        built.append(model)
        return model, cfg

    monkeypatch.setattr(bench, "build", spy_build)
    bench.main(["--configs", "--threads", "1", "--rounds", "1", "--train-batch", "1", "--infer-batch", "1",
                "--variants", "plain fp32", "fast bf16 gemm, no weight norm"])
    out = capsys.readouterr().out
    rows = {line[:30].strip(): line[30:].split() for line in out.splitlines()
            if line.startswith(("plain fp32 ", "fast bf16 gemm, no weight norm"))}
    assert set(rows) == {"plain fp32", "fast bf16 gemm, no weight norm"}
    assert rows["plain fp32"][1] == "1.00"  # the reference row
    assert all(float(rows[label][0]) > 0 for label in rows)  # train seconds
    # the FLOP audit: plain (nn.Conv1d) counts the same either way; the gemm path's in-place taps were uncounted
    audit = {line[2:32].strip(): line for line in out.splitlines() if "old/new" in line and line.startswith("  ")}
    assert "train" in audit["plain fp32"] and "old/new 1.000" in audit["plain fp32"]
    ratio = float(audit["fast bf16 gemm, no weight norm"].split("old/new ")[1].split(")")[0])
    assert 0.0 < ratio < 1.0
    # models built: the state donor, then (train, infer) per variant. plain keeps weight norm in both; the probe
    # folds it in its inference model (as every fast row does) and, unlike them, in its training model too
    has_weight_norm = [any(parametrize.is_parametrized(m) for m in model.modules()) for model in built]
    assert has_weight_norm == [True, True, True, False, False]


@pytest.mark.parametrize("module, flags", [("benchmarks.task2_models", ["--configs", "--variants", "nope"]),
                                           ("benchmarks.speaker_extraction", ["--paths", "--variants", "plain fp32",
                                                                              "nope"])])
def test_ablation_clis_refuse_an_unknown_variant_in_one_line(module, flags):
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", module, *flags], cwd=Path(__file__).parents[1],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --variants 'nope': unknown; choose from 'plain fp32'")
    assert completed.stdout == ""
