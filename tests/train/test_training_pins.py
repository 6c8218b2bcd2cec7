"""Training results, pinned bit for bit: short seeded runs of supervised fitting and of pretraining
(supervised and SimCLR) on the CPU hash to fixed digests, so reorganising the training code cannot
change a number.

Each digest is sha256 over the trained weights (every tensor's name, dtype, shape and bytes; for
pretraining also the checkpoint's input specification and metadata) and over ``log.csv`` without its
timing columns.  The digests were produced by this file's functions on the code before the training
loop was shared between fitting and pretraining (``thyro.train.fit`` and ``thyro.train.pretrain`` each
with their own loop), on torch 2.14.1 with AVX512 kernels, one thread; a failing assertion prints the
digest it computed.  Floating-point results depend on the CPU's vector kernels, so on another torch
version or CPU capability the pinned comparison is skipped (the resume checks still run).  Change the
digests only with a change that is meant to change training, and say so in its commit.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from thyro.config import PretrainConfig, TrainConfig
from thyro.models.checkpoint import read_checkpoint_info
from thyro.models.weights.formats import read_safetensors
from thyro.train.fit import ArraySet, fit
from thyro.train.pretrain import pretrain

#: Where the digests were computed: (torch version, CPU capability).
PINNED_ON = ("2.14.1", "AVX512")
#: Each name's digest on every CPU it was pinned on: AVX512 kernels differ in their last bits between CPU
#: makers (the first digest: the machine the pins were made on; the second: an AMD EPYC with AVX512, the
#: same code, torch 2.14.1).  A change to training changes the digest on every CPU, so it matches neither.
PINNED = {
    "fit_augment": ("760c4440eb5ab89582b5aa6ff3ad19d9cce1dfe3a01410e66bd8b9eb1d53978b",
                    "4293e8ef44ad3bca621f6e75a815f7ffdc4385b9fb54820241093452c00b0cad"),
    "fit_ema_select": ("3041a4d774d61538b47b2f18fd7e674ffd090d7290ec7e2b35a12e3e4603e624",
                       "4031557647ecd87b800f5c41616b8291bee99f58cc843c20e7bd842df2f14562"),
    "fit_recipe": ("606cde8083c7a431b8bb10e31fc4aaa839b01010950c788dcd537c38d5894b5a",
                   "84a295b45768e856cd5080ebae60aa76f6cb65699c44e4eab9d5cd2f923b4135"),
    "pretrain_supervised": ("c2f9a42546cfcf3b7c2b51af88ed2f63b829a6c58ad1fb23442ac8618475270c",
                            "9761bb3ba68ba44a075ebd330f7f62c43bc85668a12304c444ffc91b6e74696d"),
    "pretrain_simclr": ("3e3da89c189417444e5e71a715cecdd71058bf93de9469ded2cca07885720d64",
                        "a4ced1c9d56ca90d079e8e90b8fa9b7a3741422123c02d69e6ec40c198c78219"),
    "pretrain_supervised_resumed": ("b4119b89b71be1c61ece5556a983fa1edbf36d8df46d2fad3e25b0235d6390f2",
                                    "30a4605abd9a98ba681fbe01695626790ace9331ee1f951d971b54c0499641eb"),
    "pretrain_simclr_resumed": ("9f1853802c80b2f29c388169c3ececd68278cbbd55bf2787e2851525ab922182",
                                "a238646613dc1072dde0abad09f9a948f5c9d5c0a70154a76f99cdc9cf51952f"),
}


def _platform() -> tuple[str, str]:
    return torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability()


def _check(name: str, digest: str) -> None:
    if _platform() != PINNED_ON:
        pytest.skip(f"digests pinned on torch {PINNED_ON[0]} with {PINNED_ON[1]} kernels, this is {_platform()}")
    assert digest in PINNED[name], f"{name}: computed {digest}"


def _hash_state(h, state: dict[str, torch.Tensor]) -> None:
    for k in sorted(state):
        v = state[k].detach().to("cpu").contiguous()
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.numpy().tobytes())


def _hash_log(h, path: Path, drop: tuple[str, ...]) -> None:
    with open(path, newline="") as fh:
        rows = [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]
    h.update(json.dumps(rows, sort_keys=True).encode())


def fit_digest(model: nn.Module, folder: Path) -> str:
    h = hashlib.sha256()
    _hash_state(h, model.state_dict())
    _hash_log(h, folder / "log.csv", ("seconds",))
    return h.hexdigest()


def pretrain_digest(out: Path) -> str:
    h = hashlib.sha256()
    tensors, _ = read_safetensors(out)
    _hash_state(h, tensors)
    info = read_checkpoint_info(out)
    h.update(json.dumps({k: info[k] for k in ("arch", "layout", "input_spec", "metadata")}, sort_keys=True).encode())
    _hash_log(h, out.with_name(out.stem + ".pretrain") / "log.csv", ("seconds", "images_per_second"))
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ fit


class TinyNet(nn.Module):
    """A small CNN with BatchNorm and dropout."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.1), nn.Linear(128, 1))

    def forward(self, x):
        return self.body(x).reshape(-1)


def square_task(n: int, size: int, seed: int, bright: int = 230) -> ArraySet:
    """Malignant images (every third) have a square of brightness ``bright`` in the centre."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.float32)
    images = rng.integers(0, 120, size=(n, size, size)).astype(np.uint8)
    c, r = size // 2, size // 6
    images[labels == 1, c - r:c + r, c - r:c + r] = bright
    return ArraySet(images, labels)


def _train_cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, device="cpu", tensorboard=False, seed=1,
                threads=1)
    base.update(kw)
    return TrainConfig(**base)


class _Kill(Exception):
    pass


def _kill_after(last_epoch: int):
    def hook(epoch, row):
        if epoch == last_epoch:
            raise _Kill
    return hook


#: name -> (model factory, data (train, val), config, fit keywords, epoch after which the cut run stops)
FIT_CASES = {
    # augmentation on, at 96 px (channels-last on the CPU), weighted loss, the last epoch kept
    "fit_augment": (lambda: TinyNet(), lambda: (square_task(64, 96, 0), square_task(32, 96, 1)),
                    _train_cfg(), dict(select_best=False), 0),
    # early stopping on validation AUROC over EMA weights, balanced sampler, label smoothing, SGD
    "fit_ema_select": (lambda: TinyNet(), lambda: (square_task(64, 24, 0, 100), square_task(32, 24, 1, 100)),
                       _train_cfg(epochs=6, ema_decay=0.9, patience=2, imbalance="balanced_sampler",
                                  label_smoothing=0.1, optimizer="sgd", lr=0.05), dict(select_best=True), 2),
}


@pytest.mark.parametrize("name", sorted(FIT_CASES))
def test_fit_is_pinned_and_a_resumed_run_repeats_it(name, tmp_path):
    make_model, make_data, cfg, kw, cut = FIT_CASES[name]
    train, val = make_data()
    model = make_model()
    fit(model, train, val, cfg, tmp_path / "full", **kw)
    digest = fit_digest(model, tmp_path / "full")

    with pytest.raises(_Kill):
        fit(make_model(), train, val, cfg, tmp_path / "cut", on_epoch_end=_kill_after(cut), **kw)
    resumed = TinyNet(seed=5)  # a fresh process rebuilds the model; its weights come from last.pt
    fit(resumed, train, val, cfg, tmp_path / "cut", **kw)
    assert fit_digest(resumed, tmp_path / "cut") == digest
    _check(name, digest)


def test_fit_recipe_is_pinned(tmp_path):
    """A timm ResNet-18 as a pretrained arm: a frozen stem, frozen BatchNorm statistics, gradual unfreezing,
    layer-wise rate decay, a slower backbone, and one checkpoint at the end."""
    from thyro.models import build_model

    train, val = square_task(24, 32, 0), square_task(16, 32, 1)
    model, _ = build_model("resnet18", "none", seed=1)
    cfg = _train_cfg(batch_size=8, epochs=3, batchnorm="frozen", freeze_stages=1, unfreeze_epochs=2,
                     layer_decay=0.8, backbone_lr_mult=0.5, checkpoint_interval_s=1e9, augment={"enabled": False})
    fit(model, train, val, cfg, tmp_path, pretrained=True, select_best=False)
    _check("fit_recipe", fit_digest(model, tmp_path))


# ------------------------------------------------------------------------------------------- pretrain


def _tree(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, (cls, n) in enumerate(classes.items()):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = (rng.random((40, 40)) * 50).astype(np.uint8)
            img[:, k % 4::4] += 150
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def _pretrain_cfg(**kw) -> PretrainConfig:
    base = dict(epochs=2, batch_size=8, optimizer="sgd", lr=0.05, device="cpu", warmup_epochs=0.5, threads=1,
                checkpoint_every=1, preprocess={"size": 32, "remove_frame": False})
    base.update(kw)
    return PretrainConfig.parse(base)


#: name -> (corpus classes (folder -> images; "" = the root), config, steps before the cut run stops)
PRETRAIN_CASES = {
    "pretrain_supervised": ({"CT/lung/nodule": 6, "CT/lung/normal": 6, "US/thyroid/cyst": 6},
                            _pretrain_cfg(label_smoothing=0.1), 3),
    "pretrain_simclr": ({"": 12}, _pretrain_cfg(mode="simclr", batch_size=4, proj_dim=16, optimizer="adamw",
                                                lr=1e-3), 4),
}


@pytest.mark.parametrize("name", sorted(PRETRAIN_CASES))
def test_pretrain_is_pinned_and_a_resumed_run_repeats_its_weights(name, tmp_path):
    """The resumed run ends with the same weights; its log differs in the epoch it resumed in (that row
    averages the steps run after the resume), so it has a digest of its own."""
    classes, cfg, cut = PRETRAIN_CASES[name]
    corpus = _tree(tmp_path / "corpus", classes)
    full = tmp_path / "full.safetensors"
    pretrain(corpus, full, cfg, cache_dir=tmp_path / "cache")

    part = tmp_path / "part.safetensors"
    assert pretrain(corpus, part, cfg, cache_dir=tmp_path / "cache", max_steps=cut) is None
    result = pretrain(corpus, part, cfg, cache_dir=tmp_path / "cache")
    assert result is not None and result.resumed_from is not None
    a, _ = read_safetensors(full)
    b, _ = read_safetensors(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _check(name, pretrain_digest(full))
    _check(name + "_resumed", pretrain_digest(part))
