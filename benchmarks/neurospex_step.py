"""Where a NeuroSpex training step spends its time on CPU: forward + backward of each part, median of rounds.

Builds the model of --config (default neurospex_small) with its own conv_impl, and times forward +
backward (sum of the output as the loss) of the EEG encoder, one cross-attention fusion, one TCN
repeat and one TCN block with its pieces (1x1 GEMMs, PReLU, layer norm, depthwise conv), then a whole
step (model, negative SI-SDR, backward, gradient clipping, fused Adam), all on a batch of
--batch random crops of --crop-s seconds (the demo trains on 4 x 2 s). Every entry is timed in
interleaved rounds with the fp32 matmul peak (`benchmarks.speed`: `interleave`, `summary`, `count_flops`),
so each row has its median and 25-75 % range, GFLOP/s and % of the peak of the same rounds.
``--compile`` also times the same step with ``torch.compile`` of the model (inductor), with its ratio to
the eager step and the time of the first (compiling) step.

    python -m benchmarks.neurospex_step --threads 2 [--compile]
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/neurospex_step.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="neurospex_small",
                        help="config name in speaker_extraction/configs (without .yaml) or a YAML path")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=4, help="crops per batch")
    parser.add_argument("--crop-s", type=float, default=2.0, help="crop length in seconds (8 kHz audio, 128 Hz EEG)")
    parser.add_argument("--repeats", type=int, default=20, help="calls per timed entry and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median and 25-75 %% range)")
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile(model)")
    args = parser.parse_args(argv)

    from benchmarks.speaker_extraction import load_model_config, make_inputs, resolve_config
    from util.errors import EEGKitError
    from util.inputs import check_number_flags

    check_number_flags(args, {"--threads": (1, True, False), "--batch": (1, True, False),
                              "--repeats": (1, True, False), "--rounds": (1, True, False),
                              "--crop-s": (0.5, False, False)})
    if args.crop_s > 30:
        raise EEGKitError(f"--crop-s {args.crop_s}: must be within 0.5-30 s")
    if not resolve_config(args.config).is_file():
        raise EEGKitError(f"--config {args.config}: no such config ({resolve_config(args.config)})")

    import torch
    from torch.nn import functional as F

    from benchmarks.speed import count_flops, fmt_range, interleave, peak_fns, peak_rows, summary
    from speaker_extraction.loss import neg_si_sdr_loss
    from speaker_extraction.models import build_model
    from speaker_extraction.models.tcn import depthwise_conv_cl, pointwise_cl
    from util.prelu import prelu
    from util.trainer import make_adam

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(load_model_config(args.config))
    mixture, eeg, target = make_inputs(args.batch, args.crop_s, model.eeg_channels, torch.Generator().manual_seed(0))
    with torch.no_grad():
        frames = model.speech_encoder(mixture[:1].unsqueeze(1)).shape[2]
    bottleneck, eeg_dim = model.bottleneck.out_channels, model.fusions[0].cross_attention.query_proj.in_features
    block = model.repeats[0].blocks[0]
    hidden = block.in_conv.out_channels
    speech = torch.randn(args.batch, frames, bottleneck, requires_grad=True)  # (batch, frames, B)
    eeg_frames = torch.randn(args.batch, frames, eeg_dim, requires_grad=True)  # (batch, frames, eeg_dim)
    wide = torch.randn(args.batch, frames, hidden, requires_grad=True)  # (batch, frames, H)
    norm = block.in_norm
    optimizer = make_adam(model.parameters(), 1e-4, (0.9, 0.999))

    def backward_of(fn):
        return lambda: fn().sum().backward()

    def step_of(forward):
        def step():
            loss = neg_si_sdr_loss(forward(mixture, eeg), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        return step

    calls = {
        "EEG encoder": backward_of(lambda: model.eeg_encoder(eeg)),
        "one cross-attention fusion": backward_of(lambda: model.fusions[0].forward_cl(speech, eeg_frames)),
        "one TCN repeat": backward_of(lambda: model.repeats[0].forward_cl(speech)),
        "one TCN block": backward_of(lambda: block.forward_cl(speech)),
        f"  1x1 conv {bottleneck}->{hidden} (GEMM)": backward_of(lambda: pointwise_cl(speech, block.in_conv)),
        "  PReLU (util.prelu, as the block runs it)": backward_of(lambda: prelu(wide, block.in_activation.weight)),
        "  PReLU (nn.PReLU, torch's backward)": backward_of(lambda: block.in_activation(wide)),
        "  layer norm": backward_of(lambda: F.layer_norm(wide, (hidden,), norm.weight, norm.bias, norm.eps)),
        "  depthwise conv": backward_of(lambda: depthwise_conv_cl(wide, block.depthwise_conv)),
        f"  1x1 conv {hidden}->{bottleneck} (GEMM)": backward_of(lambda: pointwise_cl(wide, block.out_conv)),
        "whole step (eager)": step_of(model),
    }
    flops = {label: count_flops(call) for label, call in calls.items()}
    compile_s = None
    if args.compile:
        compiled_step = step_of(torch.compile(model))
        started = time.perf_counter()
        compiled_step()  # the compile
        compile_s = time.perf_counter() - started
        calls["whole step (torch.compile)"] = compiled_step
        flops["whole step (torch.compile)"] = flops["whole step (eager)"]  # the same maths

    def repeated(call):
        def run():
            for _ in range(args.repeats):
                call()
        return run

    fns = {label: repeated(call) for label, call in calls.items()}
    peaks, peak_flops = peak_fns()
    fns["peak fp32"] = peaks["fp32"]
    times = interleave(fns, args.rounds)
    peak = peak_rows(times, peak_flops)["fp32"]
    counts = {"one cross-attention fusion": len(model.fusions), "one TCN repeat": len(model.repeats),
              "one TCN block": sum(len(r.blocks) for r in model.repeats)}
    print(f"{args.config}: {args.threads} threads, batch {args.batch} x {args.crop_s:g} s ({frames} frames), "
          f"forward + backward; {args.rounds} interleaved rounds of {args.repeats} calls; median ms per call "
          f"(25-75 % range); %peak of the fp32 matmul peak of the same rounds")
    print(f"fp32 matmul peak (2048^2, best of 3 per round): {peak['gflops']:.0f} GFLOP/s ({fmt_range(peak['iqr'])})")
    print(f"{'part':<42}{'ms':>9}{'(IQR)':>15}{'GF/s':>8}{'%peak':>7}  repeats in a model")
    for label in calls:
        reference = "whole step (eager)" if label == "whole step (torch.compile)" else None
        row = summary(times, label, reference=reference, flops=flops[label] * args.repeats,
                      peak_label="peak fp32", peak_flops=peak_flops)
        iqr_ms = [value / args.repeats * 1e3 for value in row["iqr_s"]]
        extra = str(counts.get(label, ""))
        if reference is not None:
            extra = (f"{row['ratio']:.2f}x eager ({fmt_range(row['ratio_iqr'])}); "
                     f"first step incl. compile {compile_s:.0f} s")
        print(f"{label:<42}{row['s'] / args.repeats * 1e3:>9.2f}{fmt_range(iqr_ms):>15}"
              f"{row.get('gflops', 0.0):>8.1f}{row.get('pct_peak', 0.0):>7.1f}  {extra}")
    return 0


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
