"""Where a NeuroSpex training step spends its time on CPU: forward + backward of each part, median of rounds.

Builds the model of --config (default neurospex_small) with its own conv_impl, and times forward +
backward (sum of the output as the loss) of the EEG encoder, one cross-attention fusion, one TCN
repeat and one TCN block with its pieces (1x1 GEMMs, PReLU, layer norm, depthwise conv), then a whole
step (model, negative SI-SDR, backward, gradient clipping, foreach Adam), all on a batch of
--batch random crops of --crop-s seconds (the demo trains on 4 x 2 s). ``--compile`` also times the
same step with ``torch.compile`` of the model (inductor) and prints the compile time.

    python -m benchmarks.neurospex_step --threads 2 [--compile]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _median_ms(fn, repeats: int, rounds: int) -> tuple[float, float, float]:
    """(median, min, max) over ``rounds`` of the mean time of ``repeats`` calls, in ms (2 warm-up calls)."""
    fn()
    fn()
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        means.append((time.perf_counter() - started) / repeats * 1e3)
    return statistics.median(means), min(means), max(means)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="neurospex_small", help="config name in speaker_extraction/configs")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=4, help="crops per batch")
    parser.add_argument("--crop-s", type=float, default=2.0, help="crop length in seconds (8 kHz audio, 128 Hz EEG)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the median is reported)")
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile(model)")
    args = parser.parse_args(argv)

    from util.errors import EEGKitError

    for flag, value in (("--threads", args.threads), ("--batch", args.batch), ("--repeats", args.repeats),
                        ("--rounds", args.rounds)):
        if value < 1:
            raise EEGKitError(f"{flag} {value}: must be >= 1")
    if not 0.5 <= args.crop_s <= 30:
        raise EEGKitError(f"--crop-s {args.crop_s}: must be within 0.5-30 s")
    config_path = REPO / "speaker_extraction" / "configs" / f"{args.config}.yaml"
    if not config_path.is_file():
        raise EEGKitError(f"--config {args.config}: no such config in speaker_extraction/configs")

    import torch
    from torch.nn import functional as F

    from speaker_extraction.loss import neg_si_sdr_loss
    from speaker_extraction.models import build_model
    from speaker_extraction.models.tcn import depthwise_conv_cl, pointwise_cl
    from util.config import load_config
    from util.trainer import make_adam

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(load_config(config_path)["model"])
    n_audio, n_eeg = int(round(args.crop_s * 8000)), int(round(args.crop_s * 128))
    mixture, target = torch.randn(args.batch, n_audio), torch.randn(args.batch, n_audio)  # (batch, samples)
    eeg = torch.randn(args.batch, n_eeg, model.eeg_channels)  # (batch, time, C)
    with torch.no_grad():
        frames = model.speech_encoder(mixture[:1].unsqueeze(1)).shape[2]
    bottleneck, eeg_dim = model.bottleneck.out_channels, model.fusions[0].cross_attention.query_proj.in_features
    block = model.repeats[0].blocks[0]
    hidden = block.in_conv.out_channels
    speech = torch.randn(args.batch, frames, bottleneck, requires_grad=True)  # (batch, frames, B)
    eeg_frames = torch.randn(args.batch, frames, eeg_dim, requires_grad=True)  # (batch, frames, eeg_dim)
    wide = torch.randn(args.batch, frames, hidden, requires_grad=True)  # (batch, frames, H)
    norm = block.in_norm

    def backward_of(fn):
        return lambda: fn().sum().backward()

    parts = [
        ("EEG encoder", backward_of(lambda: model.eeg_encoder(eeg))),
        ("one cross-attention fusion", backward_of(lambda: model.fusions[0].forward_cl(speech, eeg_frames))),
        ("one TCN repeat", backward_of(lambda: model.repeats[0].forward_cl(speech))),
        ("one TCN block", backward_of(lambda: block.forward_cl(speech))),
        (f"  1x1 conv {bottleneck}->{hidden} (GEMM)", backward_of(lambda: pointwise_cl(speech, block.in_conv))),
        ("  PReLU", backward_of(lambda: block.in_activation(wide))),
        ("  layer norm", backward_of(lambda: F.layer_norm(wide, (hidden,), norm.weight, norm.bias, norm.eps))),
        ("  depthwise conv", backward_of(lambda: depthwise_conv_cl(wide, block.depthwise_conv))),
        (f"  1x1 conv {hidden}->{bottleneck} (GEMM)", backward_of(lambda: pointwise_cl(wide, block.out_conv))),
    ]
    optimizer = make_adam(model.parameters(), 1e-4, (0.9, 0.999), torch.device("cpu"))

    def make_step(forward):
        def step():
            loss = neg_si_sdr_loss(forward(mixture, eeg), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        return step

    print(f"{args.config}: {args.threads} threads, batch {args.batch} x {args.crop_s:g} s ({frames} frames), "
          f"forward + backward; median of {args.rounds} rounds of {args.repeats} calls (min-max)")
    print(f"{'part':<34}{'ms':>9}{'range':>17}  repeats in a model")
    counts = {"one cross-attention fusion": len(model.fusions), "one TCN repeat": len(model.repeats),
              "one TCN block": sum(len(r.blocks) for r in model.repeats)}
    for label, fn in parts:
        median, low, high = _median_ms(fn, args.repeats, args.rounds)
        print(f"{label:<34}{median:>9.2f}   {low:>6.2f}-{high:<6.2f}  {counts.get(label, '')}")
    median, low, high = _median_ms(make_step(model), args.repeats, args.rounds)
    print(f"{'whole step (eager)':<34}{median:>9.2f}   {low:>6.2f}-{high:<6.2f}")
    if args.compile:
        compiled = torch.compile(model)
        started = time.perf_counter()
        make_step(compiled)()
        compile_s = time.perf_counter() - started
        median, low, high = _median_ms(make_step(compiled), args.repeats, args.rounds)
        print(f"{'whole step (torch.compile)':<34}{median:>9.2f}   {low:>6.2f}-{high:<6.2f}  "
              f"(first step incl. compile {compile_s:.0f} s)")
    return 0


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
