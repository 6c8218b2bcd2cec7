"""The fine-tuning recipe (frozen stages, gradual unfreezing, layer-wise rates, BatchNorm statistics) and the
linear probe on cached features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thyro.config import TrainConfig
from thyro.models import build_model
from thyro.train.fit import ArraySet, fit
from thyro.train.recipe import freeze_norm_statistics, make_optimizer, set_trainable, stages, trainable_stages


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 12)
    images = rng.integers(0, 120, (24, 48, 48), dtype=np.uint8)
    images[labels == 1, 16:32, 16:32] = 230  # a bright square: malignant
    return ArraySet(images, labels)


def _cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "warmup_epochs": 0, "tensorboard": False, "lr": 1e-3,
                          "augment": {"enabled": False}, **kw})


def test_stages_follow_timm_groups_with_the_head_last():
    model, _ = build_model("resnet18", "none")
    groups = stages(model)
    assert groups[0][0] == "backbone.conv1.weight" and groups[-1] == ["backbone.fc.weight", "backbone.fc.bias"]
    assert len(groups) == 6 and sum(len(g) for g in groups) == len(list(model.parameters()))


def test_frozen_stages_do_not_move_and_keep_their_statistics(data, tmp_path):
    model, _ = build_model("resnet18", "none", seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, data, _cfg(freeze_stages=3), tmp_path, select_best=False, pretrained=True)
    after = model.state_dict()
    for key in ("backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer2.1.bn2.running_var"):
        assert torch.equal(before[key], after[key]), key  # stem, layer1, layer2: frozen
    for key in ("backbone.layer3.0.conv1.weight", "backbone.layer4.1.bn2.running_mean", "backbone.fc.weight"):
        assert not torch.equal(before[key], after[key]), key


def test_gradual_unfreezing_opens_stages_from_the_top():
    assert [trainable_stages(e, 6, 4) for e in range(6)] == [1, 2, 3, 4, 6, 6]
    assert trainable_stages(0, 6, 0) == 6
    model, _ = build_model("resnet18", "none")
    frozen = set_trainable(model, "all", open_stages=1)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["backbone.fc.weight", "backbone.fc.bias"]
    assert len(frozen) == 20  # every BatchNorm keeps its statistics while its stage is closed
    assert not set_trainable(model, "all") and all(p.requires_grad for p in model.parameters())


def test_layer_decay_and_backbone_rate(data):
    model, _ = build_model("resnet18", "none")
    cfg = _cfg()
    opt = make_optimizer(model, cfg, backbone_lr_mult=0.5, layer_decay=0.5)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["backbone.fc.weight"])] == pytest.approx(1e-3)
    assert rate[id(named["backbone.layer4.1.conv2.weight"])] == pytest.approx(1e-3 * 0.5 * 0.5)
    assert rate[id(named["backbone.conv1.weight"])] < rate[id(named["backbone.layer1.0.conv1.weight"])] \
        < rate[id(named["backbone.layer4.0.conv1.weight"])]
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay[id(named["backbone.bn1.weight"])] == 0 and decay[id(named["backbone.conv1.weight"])] > 0


def test_frozen_batchnorm_statistics_while_weights_train(data, tmp_path):
    assert freeze_norm_statistics(_cfg(batchnorm="auto", batch_size=8), pretrained=True)
    assert not freeze_norm_statistics(_cfg(batchnorm="auto", batch_size=8), pretrained=False)
    assert not freeze_norm_statistics(_cfg(batchnorm="auto", batch_size=32), pretrained=True)
    model, _ = build_model("resnet18", "none", seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, data, _cfg(batchnorm="frozen"), tmp_path, select_best=False, pretrained=True)
    after = model.state_dict()
    assert torch.equal(before["backbone.layer3.0.bn1.running_mean"], after["backbone.layer3.0.bn1.running_mean"])
    assert not torch.equal(before["backbone.layer3.0.bn1.weight"], after["backbone.layer3.0.bn1.weight"])


def test_cached_probe_head_is_the_logistic_regression(data, tmp_path):
    """The head written into the model computes sklearn's decision function on the features: the
    standardisation is folded in exactly; the strength is chosen on grouped inner folds."""
    from thyro.train.probe import pooled_features, fit_probe

    model, _ = build_model("resnet18", "none", seed=3)
    groups = [f"p{i // 2}" for i in range(len(data.labels))]  # two images per patient
    result = fit_probe(model, data, groups, data, _cfg(), tmp_path)
    assert result.epochs_run == 1 and result.best_auroc > 0.9
    assert (tmp_path / "log.csv").read_text().splitlines()[1].split(",")[4].startswith("C=")
    feats = pooled_features(model, data.images, device=torch.device("cpu"), flip=False)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(data.images).float().div(255).unsqueeze(1))
    w, b = model.head.weight.detach().numpy()[0], float(model.head.bias)
    assert np.allclose(logits.numpy(), feats @ w + b, atol=1e-4)


def test_cached_probe_needs_patients_of_both_classes(data, tmp_path):
    from thyro.errors import TrainingError
    from thyro.train.probe import fit_probe

    model, _ = build_model("resnet18", "none")
    groups = ["a" if y == 0 else "b" for y in data.labels]  # one patient per class
    with pytest.raises(TrainingError, match="at least 2 of each"):
        fit_probe(model, data, groups, data, _cfg(), tmp_path)


def test_new_head_on_pretrained_weights_starts_at_zero(tmp_path):
    from thyro.models import save_backbone

    model, _ = build_model("efficientnet_lite0", "none", seed=4)
    save_backbone(tmp_path / "b.safetensors", model)
    again, report = build_model("efficientnet_lite0", f"file:{tmp_path / 'b.safetensors'}", allow_untrained=True)
    assert report.head_reinitialised and not again.head.weight.any() and not again.head.bias.any()
    scratch, _ = build_model("efficientnet_lite0", "none", seed=4)
    assert scratch.head.weight.any()  # a network trained from scratch keeps timm's initialisation
