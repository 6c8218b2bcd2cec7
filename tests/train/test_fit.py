"""The training loop: learning, determinism, resume, best-weight copies, failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from thyro.errors import TrainingError
from thyro.config import TrainConfig
from thyro.train.fit import ArraySet, fit, lr_factor, predict_proba


class TinyNet(nn.Module):
    """A small CNN with BatchNorm and dropout, enough to learn the bright-square task."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.1), nn.Linear(128, 1))

    def forward(self, x):
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return self.body(x).reshape(-1)


def square_task(n=96, size=24, seed=0):
    """Malignant images have a bright square in the centre."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.float32)  # imbalanced, 1/3 positive
    images = rng.integers(0, 120, size=(n, size, size)).astype(np.uint8)
    c = size // 2
    images[labels == 1, c - 4:c + 4, c - 4:c + 4] = 230
    return ArraySet(images, labels)


def cfg(**kw):
    base = dict(epochs=4, batch_size=16, lr=3e-3, warmup_epochs=0.5, patience=10, device="cpu", tensorboard=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_learns_and_keeps_best_weights(tmp_path):
    train, val = square_task(96, seed=0), square_task(48, seed=1)
    model = TinyNet()
    result = fit(model, train, val, cfg(epochs=6), tmp_path)
    assert result.best_auroc > 0.9
    probs = predict_proba(model, val.images)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(val.labels, probs) == pytest.approx(result.best_auroc, abs=1e-6)
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0] == "epoch,train_loss,val_loss,val_auroc,lr,seconds" and len(log) == 1 + result.epochs_run
    assert (tmp_path / "best.safetensors").exists() and (tmp_path / "last.pt").exists()


def test_deterministic_and_resume_matches_uninterrupted(tmp_path):
    train, val = square_task(64, seed=0), square_task(32, seed=1)
    a = TinyNet()
    fit(a, train, val, cfg(), tmp_path / "a")
    b = TinyNet()
    fit(b, train, val, cfg(), tmp_path / "b")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k

    class Kill(Exception):
        pass

    def kill_after_two(epoch, row):
        if epoch == 1:
            raise Kill

    c = TinyNet()
    with pytest.raises(Kill):
        fit(c, train, val, cfg(), tmp_path / "c", on_epoch_end=kill_after_two)
    c2 = TinyNet(seed=5)  # a fresh process would rebuild the model; its weights come from last.pt
    result = fit(c2, train, val, cfg(), tmp_path / "c")
    assert result.epochs_run == 4
    for (k, va), vc in zip(a.state_dict().items(), c2.state_dict().values()):
        assert torch.allclose(va, vc, atol=1e-6), k
    assert (tmp_path / "a" / "log.csv").read_text().count("\n") == (tmp_path / "c" / "log.csv").read_text().count("\n")


def test_best_weights_are_a_copy(tmp_path):
    """The best state must not change when training continues past the best epoch."""
    from safetensors.torch import load_file
    train, val = square_task(64, seed=0), square_task(32, seed=1)
    seen = {}

    def snapshot(epoch, row):
        seen[epoch] = load_file(tmp_path / "best.safetensors")

    model = TinyNet()
    res = fit(model, train, val, cfg(epochs=5, lr=5e-2), tmp_path, on_epoch_end=snapshot)
    best = load_file(tmp_path / "best.safetensors")
    first_best = seen[res.best_epoch - 1]
    for k in best:
        assert torch.equal(best[k], first_best[k])
        assert torch.equal(model.state_dict()[k].cpu(), best[k])


def test_early_stopping(tmp_path):
    train, val = square_task(64, seed=0), square_task(32, seed=1)
    val.labels = np.random.default_rng(0).permutation(val.labels)  # nothing to learn about val: stops early
    res = fit(TinyNet(), train, val, cfg(epochs=30, patience=2), tmp_path)
    assert res.stopped_early and res.epochs_run < 30


def test_one_class_fold_is_a_clear_error(tmp_path):
    train, val = square_task(64), square_task(32)
    val.labels[:] = 0
    with pytest.raises(TrainingError, match="only class"):
        fit(TinyNet(), train, val, cfg(), tmp_path)


def test_nan_loss_stops_and_keeps_last_good_state(tmp_path):
    train, val = square_task(64), square_task(32)

    class Exploding(TinyNet):
        calls = 0

        def forward(self, x):
            Exploding.calls += 1
            out = super().forward(x)
            return out * float("nan") if Exploding.calls > 12 else out

    with pytest.raises(TrainingError, match="nan"):
        fit(Exploding(), train, val, cfg(), tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] >= 0 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    train, val = square_task(64), square_task(32)
    model = TinyNet()
    fit(model, train, val, cfg(epochs=1), tmp_path)
    before = torch.load(tmp_path / "last.pt", weights_only=True)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        fit(model, train, val, cfg(epochs=2), tmp_path)
    after = torch.load(tmp_path / "last.pt", weights_only=True)
    assert after["epoch"] == before["epoch"] == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_balanced_sampler_and_sgd(tmp_path):
    res = fit(TinyNet(), square_task(96), square_task(48, seed=1),
              cfg(epochs=5, imbalance="balanced_sampler", optimizer="sgd", lr=0.05), tmp_path)
    assert res.best_auroc > 0.8


def test_lr_schedule_warmup_then_cosine():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, 0.01) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.01, abs=2e-3)


def test_checkpoint_interval_defers_saves_to_the_end(tmp_path):
    """With a long interval, last.pt (and the best copy) are written together at the end only."""
    seen = []
    fit(TinyNet(), square_task(64), square_task(32, seed=1), cfg(epochs=3, checkpoint_interval_s=1e9), tmp_path,
        on_epoch_end=lambda e, r: seen.append((tmp_path / "last.pt").exists()))
    assert seen == [False, False, True]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and (tmp_path / "best.safetensors").exists()
