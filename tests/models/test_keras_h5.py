"""Keras HDF5 conversion (ResNet50, DenseNet121, InceptionV3, InceptionResNetV2), each proved against an
independent NumPy forward pass of the Keras network on a synthetic h5 file."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from keras_ref import (
    caffe_preprocess,
    keras_densenet121_features,
    keras_inception_resnet_v2_features,
    keras_inception_v3_features,
    keras_resnet50_features,
    read_layers,
    synthetic_resnet50_layers,
    write_keras_h5,
)
from thyro.errors import WeightsError
from thyro.models import build_model


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras")
    layers = synthetic_resnet50_layers(seed=0)
    layers["predictions"] = {"kernel": np.zeros((2048, 1000), np.float32), "bias": np.zeros(1000, np.float32)}
    files = {}
    for layout in ("save_weights", "model.save"):
        files[layout] = d / f"RadImageNet-ResNet50-{layout}.h5"
        write_keras_h5(files[layout], layers, layout=layout)
    return files


@pytest.fixture(scope="module")
def reference(keras_files):
    rng = np.random.default_rng(1)
    grey = rng.uniform(0, 1, (2, 64, 64))
    layers = read_layers(keras_files["save_weights"])
    feats = keras_resnet50_features(layers, caffe_preprocess(grey))  # (2, 2, 2, 2048) NHWC
    return grey, feats


@pytest.fixture(scope="module")
def keras_model(keras_files):
    return build_model("resnet50", f"radimagenet:{keras_files['save_weights']}")


@pytest.mark.parametrize("layout", ["save_weights", "model.save"])
def test_keras_resnet50_matches_numpy_reference(keras_files, keras_model, reference, layout):
    grey, feats = reference
    model, report = keras_model if layout == "save_weights" else build_model("resnet50", f"radimagenet:{keras_files[layout]}")
    model = copy.deepcopy(model)
    assert report.layout == "keras" and report.format == f"Keras HDF5 ({layout})"
    assert report.head_reinitialised and set(report.missing) == {"fc.weight", "fc.bias"} and not report.mismatched
    assert model.input_spec.mode == "caffe_bgr"
    assert model.backbone.layer3[0].conv1.stride == (2, 2) and model.backbone.layer3[0].conv2.stride == (1, 1)
    model.eval()
    x = torch.from_numpy(grey[:, None])
    # float64: the conversion itself is exact
    m64 = model.double()
    out64 = m64.backbone.forward_features(m64.adapter(x)).permute(0, 2, 3, 1).detach().numpy()
    scale = np.abs(feats).max()
    assert np.abs(out64 - feats).max() / scale < 5e-7  # limited by the float32 storage of the weights
    # float32, the way it is used: max abs difference about 1e-5 of the output scale
    m32 = model.float()
    out32 = m32.backbone.forward_features(m32.adapter(x.float())).permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(out32 - feats).max() / scale < 5e-6
    pooled = m32.forward_features(x.float()).detach().numpy()
    assert np.abs(pooled - feats.mean(axis=(1, 2))).max() / scale < 5e-6


def test_torchvision_layout_would_be_wrong(keras_model, reference):
    # The same tensors in the v1.5 layout (stride on the 3x3) give a different answer: the test can fail.
    grey, feats = reference
    model = copy.deepcopy(keras_model[0])
    for stage in (model.backbone.layer2, model.backbone.layer3, model.backbone.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = (1, 1), (2, 2)
    m = model.double().eval()
    x = torch.from_numpy(grey[:, None])
    out = m.backbone.forward_features(m.adapter(x)).permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(out - feats).max() / np.abs(feats).max() > 1e-2


def test_saved_keras_model_keeps_layout(keras_model, reference, tmp_path):
    from thyro.models import load_model, save_model

    grey, _ = reference
    model = keras_model[0]
    path = save_model(tmp_path / "m.safetensors", model)
    back = load_model(path)
    assert back.layout == "keras" and back.backbone.layer4[0].conv1.stride == (2, 2)
    assert back.backbone.bn1.eps == pytest.approx(1.001e-5)
    x = torch.from_numpy(grey[:1, None]).float()
    assert torch.allclose(back(x), model.eval()(x), atol=1e-5)


def test_h5_missing_layers_refused(tmp_path):
    layers = synthetic_resnet50_layers(seed=0)
    for name in ("conv5_block3_3_conv", "conv5_block3_3_bn", "conv4_block6_1_bn"):
        del layers[name]
    path = tmp_path / "broken.h5"
    write_keras_h5(path, layers)
    with pytest.raises(WeightsError, match=r"3 layer\(s\) missing, first: conv4_block6_1_bn"):
        build_model("resnet50", f"radimagenet:{path}")


def test_h5_for_other_arch_refused(keras_files):
    with pytest.raises(WeightsError, match="resnet50, densenet121, inception_v3, inception_resnet_v2 only, not resnet18"):
        build_model("resnet18", f"radimagenet:{keras_files['save_weights']}")
    with pytest.raises(WeightsError, match="expected 203 of each. The file looks like resnet50"):
        build_model("inception_resnet_v2", f"radimagenet:{keras_files['save_weights']}")
    with pytest.raises(WeightsError, match="expected 94 of each. The file looks like resnet50"):
        build_model("inception_v3", f"radimagenet:{keras_files['save_weights']}")
    with pytest.raises(WeightsError, match="looks like resnet50"):
        build_model("densenet121", f"radimagenet:{keras_files['save_weights']}")


def test_truncated_h5_refused(keras_files, tmp_path):
    data = keras_files["save_weights"].read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="truncated"):
        build_model("resnet50", f"radimagenet:{bad}")


def test_keras_densenet121_matches_numpy_reference(tmp_path):
    grey = np.random.default_rng(2).uniform(0, 1, (1, 64, 64))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (np.repeat(grey[..., None], 3, axis=-1) - mean) / std
    feats, layers = keras_densenet121_features(x, rng=np.random.default_rng(0))
    path = tmp_path / "RadImageNet-DenseNet121_notop.h5"
    write_keras_h5(path, layers, layout="model.save", weightless=("input_1", "zero_padding2d"))
    model, report = build_model("densenet121", f"radimagenet:{path}")
    assert set(report.missing) == {"classifier.weight", "classifier.bias"} and not report.mismatched
    assert report.layout == "keras" and model.backbone.features.norm0.eps == pytest.approx(1.001e-5)
    assert model.input_spec.mean == pytest.approx((0.485, 0.456, 0.406))
    model.eval()
    out = model.backbone.forward_features(model.adapter(torch.from_numpy(grey[:, None]).float()))
    out = out.permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(out - feats).max() / np.abs(feats).max() < 5e-6


def _warvito_state(layers):
    """Keras layers renamed to torchvision ResNet50 names, conv biases kept (Warvito/radimagenet-models style)."""
    state = {}

    def put(kconv, kbn, tconv, tbn):
        state[f"{tconv}.weight"] = torch.from_numpy(layers[kconv]["kernel"].transpose(3, 2, 0, 1).copy())
        state[f"{tconv}.bias"] = torch.from_numpy(layers[kconv]["bias"].copy())
        for k, t in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                     ("moving_variance", "running_var")):
            state[f"{tbn}.{t}"] = torch.from_numpy(layers[kbn][k].copy())

    put("conv1_conv", "conv1_bn", "conv1", "bn1")
    for stage, n in ((2, 3), (3, 4), (4, 6), (5, 3)):
        for b in range(1, n + 1):
            k, t = f"conv{stage}_block{b}", f"layer{stage - 1}.{b - 1}"
            if b == 1:
                put(f"{k}_0_conv", f"{k}_0_bn", f"{t}.downsample.0", f"{t}.downsample.1")
            for i in (1, 2, 3):
                put(f"{k}_{i}_conv", f"{k}_{i}_bn", f"{t}.conv{i}", f"{t}.bn{i}")
    return state


def test_keras_converted_resnet50_pth_matches_numpy_reference(tmp_path, reference):
    grey, feats = reference
    torch.save(_warvito_state(synthetic_resnet50_layers(seed=0)), tmp_path / "RadImageNet-ResNet50_notop.pth")
    model, report = build_model("resnet50", f"file:{tmp_path / 'RadImageNet-ResNet50_notop.pth'}")
    assert report.format == "Keras-converted state_dict (conv biases)" and report.layout == "keras"
    assert model.input_spec.mode == "caffe_bgr"
    m = model.eval()
    out = m.backbone.forward_features(m.adapter(torch.from_numpy(grey[:, None]).float()))
    out = out.permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(out - feats).max() / np.abs(feats).max() < 5e-6


def test_keras_inception_v3_matches_numpy_reference(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.uniform(0, 1, (2, 75, 75))
    x = np.repeat((grey * 2 - 1)[..., None], 3, axis=-1)  # Keras "tf" preprocessing of a grey image
    feats, layers = keras_inception_v3_features(x, rng=np.random.default_rng(0))
    # a real file lists layers in graph order, not creation order: the numbers decide
    names = list(layers)
    random.Random(0).shuffle(names)
    path = tmp_path / "RadImageNet-InceptionV3_notop.h5"
    write_keras_h5(path, {n: layers[n] for n in names}, layout="model.save", weightless=("input_1", "mixed0"))
    model, report = build_model("inception_v3", f"radimagenet:{path}")
    assert report.layout == "keras" and set(report.missing) == {"fc.weight", "fc.bias"} and not report.mismatched
    assert model.input_spec.mean == (0.5, 0.5, 0.5)
    model.eval()
    g = torch.from_numpy(grey[:, None]).float()
    out = model.backbone.forward_features(model.adapter(g)).permute(0, 2, 3, 1).detach().numpy()
    scale = np.abs(feats).max()
    assert np.abs(out - feats).max() / scale < 5e-6
    # timm's own pooling counts the padding: at 75 px that is visibly different
    plain, _ = build_model("inception_v3", "none")
    plain.backbone.load_state_dict(model.backbone.state_dict())
    wrong = plain.eval().backbone.forward_features(model.adapter(g)).permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(wrong - feats).max() / scale > 1e-2
    # the layout survives a checkpoint round trip
    from thyro.models import load_model, save_model

    back = load_model(save_model(tmp_path / "m.safetensors", model))
    assert torch.allclose(back.forward_features(g), model.forward_features(g), atol=1e-5)


def test_keras_inception_resnet_v2_matches_numpy_reference(tmp_path):
    grey = np.random.default_rng(1).uniform(0, 1, (1, 75, 75))
    x = np.repeat((grey * 2 - 1)[..., None], 3, axis=-1)
    feats, layers = keras_inception_resnet_v2_features(x, rng=np.random.default_rng(0))
    names = list(layers)
    random.Random(1).shuffle(names)
    path = tmp_path / "RadImageNet-IRV2_notop.h5"
    write_keras_h5(path, {n: layers[n] for n in names}, weightless=("input_1",))
    model, report = build_model("inception_resnet_v2", f"radimagenet:{path}")
    assert set(report.missing) == {"classif.weight", "classif.bias"} and not report.mismatched
    assert model.input_spec.mean == (0.5, 0.5, 0.5)
    model.eval()
    out = model.backbone.forward_features(model.adapter(torch.from_numpy(grey[:, None]).float()))
    out = out.permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(out - feats).max() / np.abs(feats).max() < 5e-6
    # a file that lacks one of the named residual projections is refused by name
    del layers["block17_20_conv"]
    write_keras_h5(path, layers, weightless=())
    with pytest.raises(WeightsError, match="1 layer\\(s\\) missing, first: block17_20_conv"):
        build_model("inception_resnet_v2", f"radimagenet:{path}")
