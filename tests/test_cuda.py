"""CUDA smoke test: the kit's train/predict/evaluate paths on a GPU (skipped cleanly where CUDA is absent).

On a CUDA machine: the tiny NeuroSpex trains with ``--device cuda`` under bf16 (util.trainer.fit:
pinned batches, non_blocking copies, autocast, fused Adam), its checkpoint is evaluated on CUDA, a tiny
CAT-WaveNet does a bf16 training step on CUDA with fp32 outputs, and the GEMM conv path matches cuDNN.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (absent here)")


def test_tiny_neurospex_trains_and_evaluates_on_cuda_in_bf16(kul_dataset, tiny_se_config, tmp_path):
    import yaml

    from speaker_extraction.evaluate import evaluate_run
    from speaker_extraction.train import main

    tiny_se_config["train"]["precision"] = "bf16"
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_se_config))
    run = tmp_path / "run"
    assert main(["--config", str(config_path), "--data", str(kul_dataset), "--out", str(run), "--no-progress",
                 "--device", "cuda"]) == 0
    assert (run / "best.pt").is_file()
    report = evaluate_run(run, kul_dataset, split="val", device="cuda", progress=False)
    assert report  # scored on the GPU without a device error


def test_cat_wavenet_bf16_step_on_cuda_and_gemm_conv_matches_cudnn():
    from task2_regression.models import build_model
    from util.conv import conv1d_tm, time_major, weight_taps
    from util.trainer import make_adam, set_precision

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_model({"type": "cat_wavenet", "layers": 2, "dilation_cycle": 2, "residual_channels": 8,
                         "last_stage_channels": 8, "attention_dim": 8, "attention_heads": 2, "attention_depth": 1},
                        {"envelope": 1, "mel": 10}).to(device)
    set_precision(model, "bf16")
    optimizer = make_adam(model.parameters(), 1e-3, (0.9, 0.999))
    out = model(torch.randn(2, 64, 64, device=device))
    assert out["mel"].dtype == torch.float32 and out["mel"].device.type == "cuda"
    loss = sum(o.square().mean() for o in out.values())
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    conv = torch.nn.Conv1d(8, 16, 3, dilation=2, padding=2).to(device)
    x = torch.randn(2, 8, 30, device=device)
    rows = conv1d_tm(time_major(x), weight_taps(conv.weight.detach()), conv.bias.detach(), 2, 2)
    reference = conv(x).detach().permute(2, 0, 1).reshape(60, 16)
    assert torch.allclose(rows, reference, atol=1e-3, rtol=1e-3)  # TF32 may be on for cuDNN
