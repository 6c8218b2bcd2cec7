"""``thyro weights inspect`` and ``thyro weights convert``; every architecture builds and runs."""

from __future__ import annotations

import pytest
import torch

from keras_ref import synthetic_resnet50_layers, write_keras_h5
from thyro.cli import main
from thyro.models import build_model, create_backbone, load_metadata, read_checkpoint_info
from thyro.models.known import KNOWN
from thyro.models.weights.inspect import inspect_weights


def test_inspect_random_vs_trained(tmp_path, capsys):
    bb = create_backbone("resnet18", seed=0)
    torch.save(bb.state_dict(), tmp_path / "random.pth")
    info = inspect_weights(tmp_path / "random.pth")
    assert info["arch_guess"] == "resnet18" and info["format"] == "timm/torchvision names"
    assert info["match"].complete and not info["match"].unmatched
    assert info["stats"]["verdict"].startswith("looks randomly initialised")
    assert not info["coverage"].missing
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    torch.save({"module." + k: v for k, v in bb.state_dict().items()}, tmp_path / "trained.pth")
    assert main(["weights", "inspect", str(tmp_path / "trained.pth")]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "looks trained" in out and "module." in str(inspect_weights(tmp_path / "trained.pth"))


def test_inspect_wrong_arch_shows_coverage(tmp_path, capsys):
    torch.save(create_backbone("resnet18", seed=0).state_dict(), tmp_path / "r18.pth")
    assert main(["weights", "inspect", str(tmp_path / "r18.pth"), "--arch", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out  # the guess
    assert "shape-mismatched" in out and "missing" in out


def test_inspect_keras_h5(tmp_path, capsys):
    write_keras_h5(tmp_path / "k.h5", synthetic_resnet50_layers(seed=0))
    info = inspect_weights(tmp_path / "k.h5")
    assert info["arch_guess"] == "resnet50" and info["format"] == "Keras HDF5 (save_weights)"
    assert len(info["coverage"].loaded) == 265


def test_inspect_errors_are_clean(tmp_path, capsys):
    (tmp_path / "bad.pth").write_bytes(b"\x80\x02garbage")
    assert main(["weights", "inspect", str(tmp_path / "bad.pth")]) == 2
    assert "bad.pth" in capsys.readouterr().err


def test_convert_keras_h5_to_safetensors(tmp_path, capsys):
    write_keras_h5(tmp_path / "RadImageNet-ResNet50_notop.h5", synthetic_resnet50_layers(seed=0), layout="model.save")
    out = tmp_path / "radimagenet-resnet50.safetensors"
    assert main(["weights", "convert", str(tmp_path / "RadImageNet-ResNet50_notop.h5"), str(out),
                 "--arch", "resnet50"]) == 0
    info = read_checkpoint_info(out)
    assert info["format"] == "thyro-backbone" and info["layout"] == "keras"
    assert info["input_spec"]["mode"] == "caffe_bgr"
    assert load_metadata(out)["converted_from"] == "RadImageNet-ResNet50_notop.h5"
    # the converted file reproduces the direct load, preprocessing and layout included
    direct, _ = build_model("resnet50", f"radimagenet:{tmp_path / 'RadImageNet-ResNet50_notop.h5'}")
    conv, report = build_model("resnet50", f"file:{out}")
    assert conv.layout == "keras" and conv.input_spec == direct.input_spec and report.head_reinitialised
    x = torch.rand(1, 1, 64, 64)
    assert torch.allclose(conv.eval().forward_features(x), direct.eval().forward_features(x), atol=1e-5)


@pytest.mark.parametrize("arch", sorted(KNOWN))
def test_every_arch_with_a_hand_kept_row_builds_and_runs(arch):
    model, report = build_model(arch, "none", dropout=0.2, seed=1)
    model.eval()
    size = 80 if arch.startswith("inception") else 48
    with torch.no_grad():
        y = model(torch.rand(2, 1, size, size))
    assert y.shape == (2,) and torch.isfinite(y).all()
    assert model.head.out_features == 1


def test_inspect_guesses_sequential_export(tmp_path, capsys):
    import torchvision

    seq = torch.nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-1])
    torch.save({f"backbone.{k}": v for k, v in seq.state_dict().items()}, tmp_path / "ResNet18.pt")
    assert main(["weights", "inspect", str(tmp_path / "ResNet18.pt")]) == 0
    out = capsys.readouterr().out
    assert "RadImageNet PyTorch export" in out and "coverage 100/100" in out
