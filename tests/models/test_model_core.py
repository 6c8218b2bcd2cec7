"""ThyroNet, the input adapter, build_model and thyro's own checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thyro.errors import ConfigError, WeightsError
from thyro.models import (
    InputSpec,
    ThyroNet,
    build_model,
    create_backbone,
    load_metadata,
    load_model,
    read_checkpoint_info,
    save_backbone,
    save_model,
)


@pytest.fixture(scope="module")
def r18():
    model, _ = build_model("resnet18", "none", seed=0)
    return model.eval()


def test_archs_and_one_logit_head():
    from thyro.models import arch

    info = arch("resnet18")
    assert (info.first_conv, info.head, info.first_norm, info.native_size, info.num_features) == (
        "conv1", ("fc",), "bn1", 224, 512)
    with pytest.raises(ConfigError, match="did you mean resnet18"):
        arch("resnet_18")
    bb = create_backbone("resnet18", seed=1)
    assert bb.fc.out_features == 1
    assert "layer4.1.conv2.weight" in bb.state_dict()  # torchvision names


def test_seed_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_backbone("resnet18", seed=5)
    after = torch.rand(1)
    b = create_backbone("resnet18", seed=5)
    c = create_backbone("resnet18", seed=6)
    assert torch.equal(before, after)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_forward_shapes_and_uint8(r18):
    x = torch.rand(3, 1, 48, 48)
    y = r18(x)
    assert y.shape == (3,)
    x8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(r18(x8), r18(x8.float() / 255), atol=1e-5)
    with pytest.raises(ValueError, match="B, 1, H, W"):
        r18(torch.rand(2, 3, 48, 48))


def test_adapter_imagenet_matches_manual_repeat(r18):
    x = torch.rand(2, 1, 40, 40)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    manual = (x.repeat(1, 3, 1, 1) - mean) / std
    assert torch.allclose(r18.adapter(x), manual, atol=1e-6)


def test_adapter_caffe_bgr_matches_keras_preprocess():
    spec = InputSpec.caffe_bgr()
    from thyro.models import InputAdapter

    rgb = torch.rand(1, 1, 8, 8)
    out = InputAdapter(spec)(rgb)
    # Keras caffe: x*255, RGB->BGR (grey: identical channels), minus BGR mean
    ref = np.stack([rgb[0, 0].numpy() * 255 - m for m in (103.939, 116.779, 123.68)])
    assert np.abs(out[0].numpy() - ref).max() < 1e-3
    assert spec.model_dump(mode="json")["mode"] == "caffe_bgr"
    assert InputSpec.parse(spec.model_dump(mode="json")) == spec


def test_sum_mode_one_channel_equals_repeat_for_equal_channel_norm(tmp_path):
    # Same mean/std on every channel: the 1-channel kernel is the plain sum, exact up to the border.
    spec = InputSpec.inception(64)
    rep, _ = build_model("resnet18", "none", seed=0, input_spec=spec)
    path = save_backbone(tmp_path / "bb.safetensors", rep)
    rep, _ = build_model("resnet18", f"file:{path}", seed=1, allow_untrained=True)  # a random stand-in
    one, _ = build_model("resnet18", f"file:{path}", seed=1, in_chans_mode="sum", allow_untrained=True)
    assert one.backbone.conv1.in_channels == 1 and one.input_spec.channels == 1
    assert one.input_spec.mean == spec.mean and one.input_spec.std == spec.std
    assert torch.allclose(one.backbone.conv1.weight, rep.backbone.conv1.weight.sum(1, keepdim=True))
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(rep.eval().forward_features(x), one.eval().forward_features(x), atol=1e-5)


def test_channels_last_and_autocast(r18):
    x = torch.rand(2, 1, 32, 32)
    ref = r18(x)
    cl = r18.to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-4)
    r18.to(memory_format=torch.contiguous_format)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = r18(x)
    assert y.shape == (2,) and torch.isfinite(y.float()).all()


def test_onnx_export(r18, tmp_path):
    # The adapter is plain tensor ops: ONNX Runtime gives the same numbers, at any batch size.
    ort = pytest.importorskip("onnxruntime")
    x = torch.rand(1, 1, 32, 32)
    path = tmp_path / "m.onnx"
    torch.onnx.export(r18, (x,), str(path), dynamo=False, input_names=["image"], output_names=["logit"],
                      dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}})
    sess = ort.InferenceSession(str(path))
    x2 = torch.rand(3, 1, 32, 32)
    out = sess.run(None, {"image": x2.numpy()})[0]
    assert out.shape == (3,)
    assert np.abs(out - r18(x2).detach().numpy()).max() < 1e-4


def test_save_load_roundtrip(tmp_path, r18):
    path = save_model(tmp_path / "m.safetensors", r18, {"epoch": 4, "val_auroc": 0.8})
    info = read_checkpoint_info(path)
    assert info["arch"] == "resnet18" and info["format"] == "thyro-model"
    assert info["input_spec"]["mean"] == [0.485, 0.456, 0.406]
    assert load_metadata(path) == {"epoch": 4, "val_auroc": 0.8}
    model = load_model(path)
    assert isinstance(model, ThyroNet) and model.metadata["epoch"] == 4
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x), r18(x))
    # and through the weight-source path, head included
    again, report = build_model("resnet18", {"file": str(path)}, allow_untrained=True)  # a random stand-in
    assert not report.head_reinitialised and report.format == "thyro-model"
    assert torch.equal(again.eval()(x), r18(x))


def test_save_keeps_preprocessing_and_layout(tmp_path):
    model, _ = build_model("resnet18", "none", input_spec=InputSpec.caffe_bgr(64), in_chans_mode="sum", seed=2)
    path = save_model(tmp_path / "m.safetensors", model)
    back = load_model(path)
    assert back.input_spec == model.input_spec and back.backbone.conv1.in_channels == 1
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(back(x), model.eval()(x))


def test_backbone_checkpoint_gets_new_head(tmp_path):
    # pretraining: another head size; then the head is re-initialised and the report says so
    bb = create_backbone("resnet18", seed=3)
    bb.reset_classifier(7)
    spec = InputSpec.inception(64)
    path = save_backbone(tmp_path / "bb.safetensors", bb, arch="resnet18", input_spec=spec)
    model, report = build_model("resnet18", f"file:{path}", seed=0, allow_untrained=True)  # a random stand-in
    assert report.head_reinitialised and "head re-initialised" in str(report)
    assert model.input_spec.mean == spec.mean
    assert torch.equal(model.backbone.layer4[1].conv2.weight, bb.layer4[1].conv2.weight)
    assert model.head.out_features == 1
    with pytest.raises(WeightsError, match="no head"):
        load_model(path)
    # a backbone checkpoint saved with a 7-way head still loads via file: (head dropped)
    torch.save(bb.state_dict(), tmp_path / "bb7.pth")
    _, report = build_model("resnet18", f"file:{tmp_path / 'bb7.pth'}", allow_untrained=True)
    assert report.head_reinitialised and "[7, 512]" in " ".join(report.notes)


def test_checkpoint_for_other_arch_refused(tmp_path, r18):
    path = save_model(tmp_path / "m.safetensors", r18)
    with pytest.raises(WeightsError, match="resnet18 backbone, not resnet50"):
        build_model("resnet50", f"file:{path}")


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model("resnet_34")
    with pytest.raises(ConfigError, match="in_chans_mode"):
        build_model("resnet18", in_chans_mode="gray")
    with pytest.raises(ConfigError, match="weights"):
        build_model("resnet18", "imagenet21k")
