"""Any timm architecture through the whole path, one of each family: a stand-in checkpoint in a real layout,
loaded by structure; one training step; predict; ONNX equal to PyTorch; Grad-CAM.

Stand-ins are seeded random timm networks whose BatchNorm statistics were measured on thyro's reference
images and whose other normalisation layers moved from their initial scale and shift (so they look trained and
the BatchNorm check has something to check), saved the way real
checkpoints of that kind are saved: torchvision, efficientnet_pytorch, timm/Hugging Face safetensors,
Lightning, DataParallel, MoCo, DINO and SimCLR.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from thyro.config import TrainConfig
from thyro.models import arch, build_model
from thyro.models.inference import Ensemble, predict_proba
from thyro.models.weights.bncheck import reference_images
from thyro.train.fit import ArraySet, fit
from thyro.use.explain import heatmaps
from thyro.use.export import TOLERANCE, verify

#: (architecture, input size of the test, how its stand-in is saved)
FAMILY = [
    ("resnet18", 64, "torchvision"),
    ("efficientnet_lite0", 64, "efficientnet_pytorch"),
    ("mobilenetv3_small_050", 64, "hf_safetensors"),
    ("convnext_atto", 64, "lightning"),
    ("densenet121", 64, "dataparallel"),
    ("regnetx_002", 64, "moco"),
    ("inception_v3", 96, "dino"),
    ("deit_tiny_patch16_224", 64, "simclr"),
]


def standin(name: str) -> dict[str, torch.Tensor]:
    """A seeded random ``name`` (ImageNet-sized head) with BatchNorm statistics measured on reference images."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=1000)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    size = arch(name).native_size
    x = torch.from_numpy(reference_images(size)).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
    mean, std = torch.tensor(arch(name).mean).view(1, 3, 1, 1), torch.tensor(arch(name).std).view(1, 3, 1, 1)
    with torch.no_grad():
        model.train()((x - mean) / std)
        for m in model.modules():  # normalisation layers without statistics get a trained look too
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and m.weight is not None:
                m.weight.mul_(1 + 0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.01 * torch.randn_like(m.bias))
    return model.state_dict()


def save_as(state: dict[str, torch.Tensor], how: str, folder: Path) -> Path:
    """Write ``state`` the way a checkpoint of kind ``how`` is written."""
    from safetensors.torch import save_file

    path = folder / f"{how}.pth"
    if how == "torchvision":
        torch.save(state, path)
    elif how == "efficientnet_pytorch":  # names other than timm's, in module order (read by position)
        items = list(state.items())
        renamed = {"_conv_stem.weight": items[0][1]}
        renamed.update({f"_blocks.{i}.t{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(items[1:])})
        torch.save(renamed, path)
    elif how == "hf_safetensors":
        path = folder / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif how == "lightning":
        torch.save({"epoch": 3, "global_step": 90, "pytorch-lightning_version": "2.4.0",
                    "state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    elif how == "dataparallel":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif how == "moco":
        q = {f"module.encoder_q.{k}": v for k, v in state.items()}
        k_ = {f"module.encoder_k.{k}": v.clone() + 1 for k, v in state.items()}  # the momentum copy differs
        torch.save({"epoch": 200, "arch": "regnet", "state_dict": q | k_, "queue": torch.randn(8, 4)}, path)
    elif how == "dino":
        body = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
        head = {"head.mlp.0.weight": torch.randn(16, 2048), "head.last_layer.weight_v": torch.randn(32, 16)}
        torch.save({"teacher": body | head, "student": {k: v + 1 for k, v in (body | head).items()}, "epoch": 100},
                   path)
    elif how == "simclr":
        body = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("head.")}
        torch.save(body | {"projector.0.weight": torch.randn(64, 192), "projector.2.weight": torch.randn(32, 64)},
                   path)
    else:
        raise AssertionError(how)
    return path


EXPECTED_LAYOUT = {"torchvision": "timm/torchvision names", "efficientnet_pytorch": "efficientnet_pytorch",
                   "hf_safetensors": "timm/Hugging Face safetensors", "lightning": "Lightning",
                   "dataparallel": "DataParallel", "moco": "MoCo query encoder", "dino": "DINO teacher",
                   "simclr": "SSL backbone"}


@pytest.mark.slow
@pytest.mark.parametrize("name,size,how", FAMILY, ids=[f[0] for f in FAMILY])
def test_whole_path(name, size, how, tmp_path):
    state = standin(name)
    path = save_as(state, how, tmp_path)
    # a random ImageNet classifier cannot be verified on photographs: the mapping by position is taken as unverified
    positional = how == "efficientnet_pytorch"
    model, report = build_model(name, f"file:{path}", image_size=size, seed=1, unverified=positional)
    assert report.verification.status == ("unverified" if positional else "verified"), report.verification.line()
    done, total = report.coverage
    assert done == total > 0, str(report)
    assert EXPECTED_LAYOUT[how] in (report.mapping or "") or EXPECTED_LAYOUT[how] in report.format, report.mapping
    backbone_key = next(k for k in state if not arch(name).is_head_key(k) and state[k].is_floating_point())
    assert torch.equal(model.backbone.state_dict()[backbone_key], state[backbone_key])

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, size, size), dtype=np.uint8)
    labels = np.array([0, 1] * 4)
    cfg = TrainConfig(epochs=1, batch_size=4, warmup_epochs=0, lr=1e-3, tensorboard=False, augment={"enabled": False})
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    fit(model, ArraySet(images, labels), ArraySet(images[:4], labels[:4]), cfg, tmp_path / "job", pretrained=True,
        description=name)
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "one training step changed nothing"

    probs = predict_proba(model, images[:3])
    assert probs.shape == (3,) and np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()

    ensemble = Ensemble([model.eval()], tta_flip=True).eval()
    x = torch.from_numpy(images[:2]).float().div(255).unsqueeze(1)
    onnx_path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ensemble, (x,), str(onnx_path), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["probability", "fold_logits"],
                          dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}, "fold_logits": {0: "batch"}})
    assert verify(onnx_path, ensemble, [x.numpy(), x[:1].numpy()]) < TOLERANCE  # float32 round-off, relative beyond ±1

    cam = heatmaps([model], images[:2])
    assert cam.shape == (2, size, size) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6


@pytest.mark.slow
def test_a_multi_branch_network_runs_study_bundle_predict_explain_and_export(tmp_path):
    """HRNet's last stage returns one map per branch: Grad-CAM weighs the last layer that returns one map
    (``final_layer``), so the whole path runs, from the study to the ONNX file."""
    import pandas as pd
    import yaml

    from thyro.cli import main
    from thyro.data.phantom import generate_cohort
    from thyro.use.export import export_onnx

    assert arch("hrnet_w18_small").cam_layer == "final_layer"
    manifest = generate_cohort(tmp_path / "phantom", n_patients=24, images_per_patient=(1, 1), size=64, seed=5)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "name": "hrnet", "data": {"manifest": str(manifest), "folds": 2, "test_size": 0.25, "seed": 0},
        "preprocess": {"size": 64},
        "arms": [{"name": "scratch", "backbone": "hrnet_w18_small", "weights": "none"}],
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "tensorboard": False, "threads": 1}}))
    run, model = tmp_path / "run", tmp_path / "model"
    assert main(["-q", "study", str(config), "--run-dir", str(run)]) == 0
    assert main(["-q", "bundle", str(run), "--arm", "scratch", "--out", str(model)]) == 0
    images = sorted(manifest.parent.rglob("*.png"))[:3]
    assert main(["-q", "predict", str(model), *map(str, images), "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == 3 and pred["probability"].between(0, 1).all()
    assert main(["-q", "explain", str(model), *map(str, images), "--out", str(tmp_path / "heat")]) == 0
    index = pd.read_csv(tmp_path / "heat" / "index.csv", keep_default_na=False)
    assert (index["error"] == "").all() and len(list((tmp_path / "heat").glob("*.gradcam.png"))) == 3
    assert (index["probability"] - pred["probability"]).abs().max() < 1e-5  # explain scores as predict does
    assert export_onnx(model)["max_diff"] <= 1e-4
