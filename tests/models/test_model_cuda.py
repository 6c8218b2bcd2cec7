"""ThyroNet on a GPU: channels-last, autocast, torch.compile, loading onto the device (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from thyro.models import build_model, load_model, save_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_channels_last_autocast_matches_fp32(arch, dtype):
    model, _ = build_model(arch, "none", seed=0)
    model = model.cuda().eval()
    x = torch.rand(4, 1, 64, 64, device="cuda")
    with torch.no_grad():
        ref = model.forward_features(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=dtype):
            logits = model(x.contiguous(memory_format=torch.channels_last))
            y = model.forward_features(x.contiguous(memory_format=torch.channels_last))
            y8 = model.forward_features((x * 255).round().to(torch.uint8))
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    scale = ref.abs().max().item()
    assert (y.float() - ref).abs().max().item() / scale < 5e-2
    assert (y8.float() - ref).abs().max().item() / scale < 5e-2


def test_training_step_under_autocast():
    model, _ = build_model("resnet18", "none", seed=0, dropout=0.2)
    model = model.cuda().train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(8, 1, 64, 64, device="cuda")
    target = torch.tensor([0, 1] * 4, device="cuda", dtype=torch.float32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), target)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()


def test_compile_matches_eager():
    model, _ = build_model("resnet18", "none", seed=0)
    model = model.cuda().eval()
    x = torch.rand(2, 1, 64, 64, device="cuda")
    with torch.no_grad():
        ref = model(x)
        got = torch.compile(model)(x)
    assert torch.allclose(got, ref, atol=1e-3, rtol=1e-3)


def test_save_on_gpu_load_to_gpu(tmp_path):
    model, _ = build_model("resnet18", "none", seed=0)
    model = model.cuda().eval().to(memory_format=torch.channels_last)
    path = save_model(tmp_path / "m.safetensors", model, {"device": "cuda"})
    back = load_model(path, map_location="cuda")
    assert next(back.parameters()).is_cuda and back.adapter.scale.is_cuda
    x = torch.rand(2, 1, 64, 64, device="cuda")
    with torch.no_grad():
        assert torch.allclose(back(x), model(x), atol=1e-4)
