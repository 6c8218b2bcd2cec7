"""Damaged, odd or hostile weight files, and the one-channel mode made exact: each case a clear error
naming the file or tensor, or numbers that match."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from keras_ref import keras_densenet121_features, synthetic_resnet50_layers, write_keras_h5

from thyro.cli import main
from thyro.errors import WeightsError
from thyro.models import build_model, load_model, save_model


@pytest.fixture(scope="module")
def keras_r50(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "RadImageNet-ResNet50_notop.h5"
    write_keras_h5(path, synthetic_resnet50_layers(seed=0))
    return path


@pytest.fixture(scope="module")
def keras_d121(tmp_path_factory) -> Path:
    grey = np.random.default_rng(2).uniform(0, 1, (1, 32, 32))
    _, layers = keras_densenet121_features(np.repeat(grey[..., None], 3, axis=-1), rng=np.random.default_rng(0))
    path = tmp_path_factory.mktemp("keras") / "RadImageNet-DenseNet121_notop.h5"
    write_keras_h5(path, layers, layout="model.save", weightless=("input_1", "zero_padding2d"))
    return path


def _cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out + cap.err


# ------------------------------------------------------------------------------------------------
# Non-finite tensors
# ------------------------------------------------------------------------------------------------

def test_nan_in_a_state_dict_is_refused_by_name(tmp_path, capsys):
    from thyro.models import create_backbone

    state = create_backbone("resnet18", seed=0).state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["layer2.0.bn1.running_var"][3] = float("inf")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        build_model("resnet18", f"file:{path}")
    text = str(info.value)
    assert str(path) in text and "2 tensor(s) hold NaN or infinite values" in text
    assert "layer1.0.conv1.weight" in text and "layer2.0.bn1.running_var" in text
    code, out = _cli(["weights", "inspect", str(path)], capsys)  # inspect still shows the file
    assert code == 0 and "non-finite tensors" in out and "layer1.0.conv1.weight" in out


def test_corrupted_keras_weights_do_not_convert_silently(keras_r50, tmp_path, capsys):
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(keras_r50.read_bytes())
    with h5py.File(bad, "r+") as fh:
        kernel = fh["conv3_block2_2_conv/conv3_block2_2_conv/kernel:0"]
        data = kernel[...]
        data.view(np.uint32)[..., :4] = 0x7FC00000  # NaN bit patterns, as corrupted bytes decode
        kernel[...] = data
    out = tmp_path / "converted.safetensors"
    code, text = _cli(["weights", "convert", str(bad), str(out), "--arch", "resnet50", "--source", "radimagenet"],
                      capsys)
    assert code == 2 and "hold NaN or infinite values" in text and "layer2.1.conv2.weight" in text
    assert not out.exists()
    code, text = _cli(["weights", "inspect", str(bad)], capsys)
    assert code == 0 and "non-finite tensors" in text


# ------------------------------------------------------------------------------------------------
# HDF5 files that are not Keras weight files
# ------------------------------------------------------------------------------------------------

def test_hdf5_with_a_top_level_dataset_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data", data=np.arange(10.0))
        fh.create_dataset("labels", data=np.arange(10))
    with pytest.raises(WeightsError, match=r"plain\.h5: an HDF5 file with no Keras layer weights"):
        build_model("resnet50", f"radimagenet:{path}")
    for args in (["weights", "inspect", str(path)],
                 ["weights", "convert", str(path), str(tmp_path / "o.safetensors"), "--arch", "resnet50"]):
        code, text = _cli(args, capsys)
        assert code == 2 and "no Keras layer weights" in text, text


def test_hdf5_mixing_groups_and_datasets_reads_the_groups(keras_r50, tmp_path):
    path = tmp_path / "mixed.h5"
    path.write_bytes(keras_r50.read_bytes())
    with h5py.File(path, "r+") as fh:
        fh.create_dataset("stray_array", data=np.zeros(4))
    model, _ = build_model("resnet50", f"radimagenet:{path}")
    assert model.backbone.conv1.in_channels == 3


def test_unsupported_architecture_message_is_current(keras_r50):
    with pytest.raises(WeightsError) as info:
        build_model("resnet18", f"radimagenet:{keras_r50}")
    text = str(info.value)
    assert "not ported" not in text
    assert "resnet50, densenet121, inception_v3, inception_resnet_v2 only, not resnet18" in text
    assert "looks like resnet50" in text


# ------------------------------------------------------------------------------------------------
# File permissions of written weights
# ------------------------------------------------------------------------------------------------

def test_converted_and_saved_files_follow_the_umask(keras_r50, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "converted.safetensors"
        code, text = _cli(["weights", "convert", str(keras_r50), str(out), "--arch", "resnet50",
                           "--source", "radimagenet"], capsys)
        assert code == 0, text
        assert out.stat().st_mode & 0o777 == 0o644
        model, _ = build_model("resnet18", "none")
        saved = save_model(tmp_path / "m.safetensors", model)
        assert saved.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        private = save_model(tmp_path / "p.safetensors", model)
        assert private.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------------
# in_chans_mode: sum, exact away from the padded border
# ------------------------------------------------------------------------------------------------

def _first_norm_output(model, x: torch.Tensor, name: str) -> torch.Tensor:
    seen = {}
    handle = model.backbone.get_submodule(name).register_forward_hook(lambda m, i, o: seen.update(out=o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["out"]


@pytest.mark.parametrize("arch, fixture, norm, margin", [
    ("resnet50", "keras_r50", "bn1", 2),              # 7x7 stride 2, padding 3: 2 output pixels reach it
    ("densenet121", "keras_d121", "features.norm0", 2),
])
def test_sum_mode_equals_repeat_away_from_the_border(arch, fixture, norm, margin, request):
    path = request.getfixturevalue(fixture)
    rep, _ = build_model(arch, f"radimagenet:{path}")
    one, report = build_model(arch, f"radimagenet:{path}", in_chans_mode="sum")
    assert one.backbone.get_submodule(norm.replace("bn1", "conv1").replace("norm0", "conv0")).in_channels == 1
    assert any("folded" in n for n in report.notes)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    a = _first_norm_output(rep.eval(), x, norm)
    b = _first_norm_output(one.eval(), x, norm)
    inner = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    rel = ((a[inner] - b[inner]).abs().max() / a[inner].abs().max()).item()
    assert rel < 1e-5, rel  # averaging the channels' mean and std instead gave about 5e-2
    border = ((a - b).abs().max() / a.abs().max()).item()
    assert border > 1e-4  # the zero-padded border differs, as documented
    # the whole network stays close: pooled features within 2 % (averaging gave about 3.5 %)
    fa, fb = rep.forward_features(x), one.forward_features(x)
    assert ((fa - fb).abs().max() / fa.abs().max()).item() < 2e-2


def test_sum_mode_model_saves_and_reloads_to_the_same_outputs(keras_r50, tmp_path, capsys):
    one, _ = build_model("resnet50", f"radimagenet:{keras_r50}", in_chans_mode="sum")
    one.eval()
    path = save_model(tmp_path / "sum.safetensors", one)
    back = load_model(path)
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(back(x), one(x))
    assert back.input_spec == one.input_spec and back.layout == "keras"
    # via `thyro weights convert` (a 3-channel backbone file), a sum-mode arm gets the same network
    conv = tmp_path / "r50.safetensors"
    code, text = _cli(["weights", "convert", str(keras_r50), str(conv), "--arch", "resnet50", "--source",
                       "radimagenet"], capsys)
    assert code == 0, text
    again, _ = build_model("resnet50", f"file:{conv}", in_chans_mode="sum")
    with torch.no_grad():
        assert _rel(again.eval().forward_features(x), one.forward_features(x)) < 1e-5
    # and a saved 1-channel model used as a 3-channel arm's weights computes the same (exact: no border)
    rep, _ = build_model("resnet50", f"file:{path}")
    with torch.no_grad():
        assert _rel(rep.eval().forward_features(x), one.forward_features(x)) < 1e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def test_a_file_is_read_by_its_bytes_not_its_name(tmp_path, capsys):
    """A PyTorch file named *.safetensors is a PyTorch file (torch.load alone would read it as safetensors by its
    name and fail with a traceback); a pickle so named is refused in one sentence; nothing runs."""
    import pickle

    from thyro.cli import main
    from thyro.models import build_model, create_backbone

    torch_file = tmp_path / "weights.safetensors"
    torch.save(create_backbone("resnet18", seed=0).state_dict(), torch_file)
    model, report = build_model("resnet18", f"file:{torch_file}", allow_untrained=True)  # a random stand-in
    assert report.coverage == (100, 100)
    assert main(["weights", "inspect", str(torch_file)]) == 0
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    pickle_file = tmp_path / "hostile.safetensors"
    pickle_file.write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    capsys.readouterr()
    for args in (["weights", "inspect", str(pickle_file)],
                 ["weights", "convert", str(pickle_file), str(tmp_path / "out.safetensors"), "--arch", "resnet18"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "refused" in err and "Traceback" not in err and "weights_only` set to `False`" not in err
    assert not ran.exists()
