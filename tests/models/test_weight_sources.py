"""Weight sources: parsing, offline ImageNet cache lookup with hash check, clear failures."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from thyro.errors import ConfigError, WeightsError
from thyro.fileio import sha256_file
from thyro.models import build_model, create_backbone, parse_weight_source


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("spec, kind, path", [
    ("none", "none", None),
    (None, "none", None),
    ("imagenet", "imagenet", None),
    ("imagenet:/w/r18.pth", "imagenet", "/w/r18.pth"),
    ("radimagenet:/w/RadImageNet-ResNet50_notop.h5", "radimagenet", "/w/RadImageNet-ResNet50_notop.h5"),
    ("file:/runs/a/model.safetensors", "file", "/runs/a/model.safetensors"),
    ({"radimagenet": "/w/x.h5"}, "radimagenet", "/w/x.h5"),
    ({"file": "/w/x.pth"}, "file", "/w/x.pth"),
    ({"imagenet": "/w/x.pth"}, "imagenet", "/w/x.pth"),
    ({"imagenet": None}, "imagenet", None),
])
def test_parse_forms(spec, kind, path):
    src = parse_weight_source(spec)
    assert src.kind == kind
    assert (str(src.path) if src.path else None) == path
    assert parse_weight_source(src.to_config()) == src


@pytest.mark.parametrize("spec, message", [
    ("imagenet21k", "none, imagenet, imagenet:PATH"),
    ("/w/x.pth", "file:PATH"),
    ({"radimagenet": "/a", "file": "/b"}, "cannot read"),
    ("radimagenet", "official release"),
    ("file:", "need a path"),
    (3, "cannot read"),
])
def test_parse_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_weight_source(spec)


def test_missing_imagenet_fails_fast_listing_places(no_network):
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        parse_weight_source("imagenet", arch="resnet18").resolve()
    assert time.perf_counter() - t0 < 1.0
    text = str(err.value)
    ckpt = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert str(ckpt / "resnet18-f37072fd.pth") in text
    assert "models--timm--resnet18.a1_in1k" in text and str(Path(os.environ["HF_HOME"])) in text
    assert 'torchvision.models.resnet18(weights="IMAGENET1K_V1")' in text
    assert "~/.cache/torch/hub/checkpoints" in text


def test_missing_named_files_fail_fast(tmp_path, no_network):
    for spec in (f"radimagenet:{tmp_path}/RadImageNet-ResNet50_notop.h5", f"file:{tmp_path}/nope.pth"):
        t0 = time.perf_counter()
        with pytest.raises(WeightsError, match="does not exist"):
            parse_weight_source(spec).resolve("resnet50")
        assert time.perf_counter() - t0 < 1.0
    with pytest.raises(WeightsError, match="is not a file"):
        parse_weight_source(f"file:{tmp_path}").resolve()


def test_inception_resnet_v2_message_names_timm():
    with pytest.raises(WeightsError, match="inception_resnet_v2.tf_in1k"):
        parse_weight_source("imagenet").resolve("inception_resnet_v2")


def test_torchvision_cache_hash_checked(monkeypatch, no_network):
    ckpt = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    sd = create_backbone("resnet18", seed=9).state_dict()
    bad = ckpt / "resnet18-f37072fd.pth"
    torch.save(sd, bad)  # right name, wrong content
    with pytest.raises(WeightsError, match="SHA-256 .* does not start with f37072fd"):
        build_model("resnet18", "imagenet")
    # a file whose name carries its true hash prefix is accepted
    good = ckpt / f"resnet18-{sha256_file(bad)[:8]}.pth"
    bad.rename(good)
    import dataclasses

    from thyro.models import known

    row = dataclasses.replace(known.KNOWN["resnet18"], torchvision_files=(good.name,))
    monkeypatch.setitem(known.KNOWN, "resnet18", row)
    model, report = build_model("resnet18", "imagenet", allow_untrained=True)  # a random stand-in
    assert report.path == str(good)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])
    assert model.input_spec.mean == (0.485, 0.456, 0.406)


def test_timm_hf_cache(no_network):
    hub = Path(os.environ["HF_HOME"]) / "hub" / "models--timm--inception_v3.tf_in1k"
    snap = hub / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("0123abcd")
    bb = create_backbone("inception_v3", seed=2)
    bb.reset_classifier(1000)
    save_file({k: v.contiguous() for k, v in bb.state_dict().items()}, str(snap / "model.safetensors"))
    model, report = build_model("inception_v3", "imagenet", allow_untrained=True)  # a random stand-in
    assert report.path == str(snap / "model.safetensors") and report.head_reinitialised
    assert torch.equal(model.backbone.Mixed_6a.branch3x3.conv.weight, bb.Mixed_6a.branch3x3.conv.weight)
    assert model.input_spec.mean == (0.5, 0.5, 0.5) and model.input_spec.input_size == 299


def test_radimagenet_resnet50_default_preprocessing_is_caffe(tmp_path):
    # a PyTorch RadImageNet file carries no preprocessing: the Keras one for the architecture is used
    bb = create_backbone("resnet50", seed=0)
    torch.save({f"backbone.{i}.{k.split('.', 1)[1]}": v for k, v in bb.state_dict().items()
                for i, name in [(0, "conv1"), (1, "bn1"), (4, "layer1"), (5, "layer2"), (6, "layer3"), (7, "layer4")]
                if k.split(".")[0] == name}, tmp_path / "ResNet50.pt")
    model, report = build_model("resnet50", f"radimagenet:{tmp_path / 'ResNet50.pt'}", allow_untrained=True)
    assert model.input_spec.mode == "caffe_bgr" and report.layout == "timm"
    assert torch.equal(model.backbone.layer4[2].bn3.running_var, bb.layer4[2].bn3.running_var)


def test_relative_path_against_config_folder(tmp_path):
    src = parse_weight_source({"file": "weights/r18.pth"}).with_base(tmp_path)
    assert src.path == tmp_path / "weights" / "r18.pth"
    assert parse_weight_source("file:/abs/x.pth").with_base(tmp_path).path == Path("/abs/x.pth")
