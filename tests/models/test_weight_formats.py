"""Weight files in every PyTorch-side format: stand-ins are seeded random networks saved here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from thyro.errors import ConfigError, WeightsError
from thyro.models import build_model, create_backbone


@pytest.fixture(scope="module")
def src18():
    """A seeded "pretrained" resnet18 with a 1000-class head and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _same_backbone(model, ref: nn.Module) -> bool:
    sd = model.backbone.state_dict()
    return all(torch.equal(sd[k], v) for k, v in ref.state_dict().items() if not k.startswith("fc."))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module", "safetensors"])
def test_torchvision_state_dict_forms(tmp_path, src18, wrap):
    sd = src18.state_dict()
    path = tmp_path / ("w.safetensors" if wrap == "safetensors" else "w.pth")
    if wrap == "plain":
        torch.save(sd, path)
    elif wrap == "state_dict":
        torch.save({"epoch": 9, "state_dict": sd, "optimizer": {"lr": 0.1}}, path)
    elif wrap == "model":
        torch.save({"model": sd}, path)
    elif wrap == "module":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    model, report = build_model("resnet18", f"file:{path}")
    assert _same_backbone(model, src18)
    assert report.head_reinitialised and report.mismatched == [("fc.weight", (1000, 512), (1, 512)),
                                                               ("fc.bias", (1000,), (1,))]
    assert len(report.loaded) == 100 and not report.unexpected
    assert "coverage 100/100" in str(report) and report.coverage == (100, 100)


def test_imagenet_file_forward_matches_torchvision(tmp_path, src18):
    torch.save(src18.state_dict(), tmp_path / "w.pth")
    model, _ = build_model("resnet18", f"imagenet:{tmp_path / 'w.pth'}")
    model.eval()
    x = torch.rand(2, 1, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats_tv = torch.flatten(nn.Sequential(*list(src18.children())[:-1])((x.repeat(1, 3, 1, 1) - mean) / std), 1)
    assert torch.allclose(model.forward_features(x), feats_tv, atol=1e-5)


def test_one_channel_mode_sums_conv1(tmp_path, src18):
    torch.save(src18.state_dict(), tmp_path / "w.pth")
    model, report = build_model("resnet18", f"file:{tmp_path / 'w.pth'}", in_chans_mode="sum")
    # per-channel ImageNet std folded in: sum_c w_c * s / s_c, s the harmonic mean of the s_c
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)
    s = 3 / (1 / std).sum()
    expected = (src18.conv1.weight.double() * (s / std).view(1, 3, 1, 1)).sum(1, keepdim=True).float()
    assert torch.allclose(model.backbone.conv1.weight, expected, atol=1e-6)
    assert model.input_spec.std[0] == pytest.approx(float(s))
    assert any("summed" in n and "folded" in n for n in report.notes)
    assert model.eval()(torch.rand(1, 1, 32, 32)).shape == (1,)


def test_radimagenet_sequential_export_resnet(tmp_path, src18):
    # RadImageNet's PyTorch export: nn.Sequential(*list(resnet.children())[:-1]) under "backbone."
    seq = nn.Sequential(*list(src18.children())[:-1])
    torch.save({f"backbone.{k}": v for k, v in seq.state_dict().items()}, tmp_path / "ResNet18.pt")
    assert "backbone.4.0.conv1.weight" in {f"backbone.{k}" for k in seq.state_dict()}
    model, report = build_model("resnet18", f"radimagenet:{tmp_path / 'ResNet18.pt'}")
    assert _same_backbone(model, src18)
    assert report.format.startswith("RadImageNet PyTorch export")
    assert set(report.missing) == {"fc.weight", "fc.bias"}


def test_radimagenet_sequential_export_inception_with_aux(tmp_path):
    # torchvision's Inception3 has AuxLogits among its children: indices after Mixed_6e shift by one.
    torch.manual_seed(1)
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    seq = nn.Sequential(*list(tv.children())[:-1])
    torch.save({f"backbone.{k}": v for k, v in seq.state_dict().items()}, tmp_path / "InceptionV3.pt")
    model, report = build_model("inception_v3", f"radimagenet:{tmp_path / 'InceptionV3.pt'}", allow_untrained=True)
    assert torch.equal(model.backbone.Mixed_7c.branch_pool.conv.weight, tv.Mixed_7c.branch_pool.conv.weight)
    assert torch.equal(model.backbone.Conv2d_1a_3x3.bn.running_var, tv.Conv2d_1a_3x3.bn.running_var)
    assert model.input_spec.mean == (0.5, 0.5, 0.5) and model.input_spec.input_size == 299
    assert all(k.startswith("fc.") for k in report.missing)


def test_densenet_legacy_keys_and_sequential(tmp_path):
    bb = create_backbone("densenet121", seed=4)
    sd = bb.state_dict()
    legacy = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in sd.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    torch.save(legacy, tmp_path / "densenet121-legacy.pth")
    model, report = build_model("densenet121", f"file:{tmp_path / 'densenet121-legacy.pth'}", allow_untrained=True)
    assert torch.equal(model.backbone.features.denseblock4.denselayer16.conv2.weight,
                       bb.features.denseblock4.denselayer16.conv2.weight)
    assert not report.head_reinitialised  # same 1-logit head
    # Lab-Rasool style: Sequential(features) under backbone.0
    torch.save({f"backbone.0.{k[len('features.'):]}": v for k, v in sd.items() if k.startswith("features.")},
               tmp_path / "DenseNet121.pt")
    model, report = build_model("densenet121", f"radimagenet:{tmp_path / 'DenseNet121.pt'}", allow_untrained=True)
    assert torch.equal(model.backbone.features.norm5.running_mean, bb.features.norm5.running_mean)
    assert report.head_reinitialised


def _with_conv_biases(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Attach random biases to every conv (as Keras-converted files carry them); return the biased state."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.bias = nn.Parameter(torch.randn(m.out_channels, generator=g) * 0.2)
    return model.state_dict()


def test_keras_converted_pth_biases_folded_exactly(tmp_path, src18):
    import copy

    biased = copy.deepcopy(src18)
    sd = _with_conv_biases(biased, seed=3)
    assert "layer2.0.downsample.0.bias" in sd and "conv1.bias" in sd
    torch.save(sd, tmp_path / "keras-converted.pth")
    model, report = build_model("resnet18", f"file:{tmp_path / 'keras-converted.pth'}")
    model.eval()
    assert "20 conv biases folded" in " ".join(report.notes)
    x = torch.rand(2, 3, 32, 32)
    ref = torch.flatten(nn.Sequential(*list(biased.children())[:-1])(x), 1)
    got = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    assert torch.allclose(got, ref, atol=1e-4)
    # dropping the biases instead of folding them would be visibly wrong
    plain = copy.deepcopy(src18)
    assert not torch.allclose(torch.flatten(nn.Sequential(*list(plain.children())[:-1])(x), 1), ref, atol=1e-2)


def test_resnet50_file_for_resnet18_refused(tmp_path):
    torch.save(create_backbone("resnet50", seed=0).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(WeightsError) as err:
        build_model("resnet18", f"file:{tmp_path / 'r50.pth'}")
    text = str(err.value)
    assert "r50.pth" in text and "does not fit a resnet18" in text
    assert "tensor(s) of another shape: layer1.0.conv1.weight file [64, 64, 1, 1] vs model [64, 64, 3, 3]" in text
    assert "file tensor(s) with no place in the backbone" in text


def test_deeper_resnet_refused_not_silently_truncated(tmp_path):
    # resnet34 contains every resnet18 key (plus more): loading only the overlap would be wrong
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(WeightsError, match=r"\d+ file tensor\(s\) with no place in the backbone: layer1\.2\."):
        build_model("resnet18", f"file:{tmp_path / 'r34.pth'}")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create a file if unpickled


def test_malicious_pickle_refused_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refused: loading this file would need to run arbitrary code"):
        build_model("resnet18", f"file:{tmp_path / 'evil.pth'}")
    assert not marker.exists()


def test_pickled_whole_model_refused(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")
    with pytest.raises(WeightsError, match="arbitrary code"):
        build_model("resnet18", f"file:{tmp_path / 'module.pth'}")


@pytest.mark.parametrize("obj, message", [(["a", "b"], "holds a list, not a dictionary of tensors"),
                                          ({"epoch": 3, "lr": 0.1}, "no tensors found")])
def test_pickle_of_something_else(tmp_path, obj, message):
    torch.save(obj, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match=message):
        build_model("resnet18", f"file:{tmp_path / 'x.pth'}")


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_truncated_files(tmp_path, src18, kind):
    full = tmp_path / f"full.{kind}"
    if kind == "pth":
        torch.save(src18.state_dict(), full)
    else:
        save_file({k: v.contiguous() for k, v in src18.state_dict().items()}, str(full))
    data = full.read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        build_model("resnet18", f"file:{cut}")


def test_not_a_weight_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, these are not weights\n")
    with pytest.raises(WeightsError, match="not a weight file"):
        build_model("resnet18", f"file:{tmp_path / 'notes.txt'}")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        build_model("resnet18", f"file:{tmp_path / 'empty.pth'}")


def test_report_to_dict_is_json(tmp_path, src18):
    import json

    torch.save(src18.state_dict(), tmp_path / "w.pth")
    _, report = build_model("resnet18", {"imagenet": str(tmp_path / "w.pth")})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["loaded"] == 100 and data["head_reinitialised"] is True
    assert np.allclose(data["input_spec"]["mean"], [0.485, 0.456, 0.406])


def test_layout_override_for_keras_trained_exports(tmp_path):
    bb = create_backbone("resnet50", seed=0)
    torch.save(bb.state_dict(), tmp_path / "r50.pth")
    model, report = build_model("resnet50", f"radimagenet:{tmp_path / 'r50.pth'}", layout="keras",
                                allow_untrained=True)
    assert model.layout == "keras" and model.backbone.layer2[0].conv1.stride == (2, 2)
    assert any("layout 'keras' requested" in n for n in report.notes)
    with pytest.raises(ConfigError, match="layout"):
        build_model("resnet18", "none", layout="keras")


def test_monai_torchvision_fc_model_layout_loads(tmp_path):
    """MONAI's TorchVisionFCModel keeps a torchvision network's children as ``features.N`` and its own ``fc``."""
    import torchvision

    from thyro.models import build_model
    from thyro.models.weights.inspect import inspect_weights

    tv = torchvision.models.resnet18(weights=None)
    children = list(tv.named_children())[:-2]  # conv1 ... layer4 (MONAI drops avgpool and fc)
    state = {}
    for i, (_, child) in enumerate(children):
        state.update({f"features.{i}.{k}": v for k, v in child.state_dict().items()})
    state["fc.weight"], state["fc.bias"] = torch.zeros(2, 512), torch.zeros(2)
    path = tmp_path / "monai.pt"
    torch.save({"model": state}, path)
    model, report = build_model("resnet18", f"file:{path}", allow_untrained=True)  # a random stand-in
    assert "MONAI" in report.format and not report.missing and not report.unexpected
    assert report.head_reinitialised and len(report.loaded) == 100
    assert torch.equal(model.backbone.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert inspect_weights(path)["arch_guess"] == "resnet18"
