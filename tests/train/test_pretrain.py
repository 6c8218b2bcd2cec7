"""Pretraining in one process: corpus discovery, bad input, the checkpoint a study loads, resume, SimCLR."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from thyro.errors import ConfigError, DataError
from thyro.train.pretrain import (
    PretrainConfig,
    load_corpus,
    prepare,
    pretrain,
    scan_folder,
)
from thyro.train.ssl import nt_xent

SIZE = 32


def _pattern(kind: int, rng: np.random.Generator, side: int = 40) -> np.ndarray:
    img = (rng.random((side, side)) * 50).astype(np.uint8)
    if kind == 0:
        img[8:24, 8:24] += 160
    elif kind == 1:
        img[:, ::4] += 150
    elif kind == 2:
        img[::5, :] += 150
    else:
        img += 90
    return img


def write_tree(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """``classes``: folder path below ``root`` -> number of PNG images."""
    rng = np.random.default_rng(seed)
    for k, (cls, n) in enumerate(classes.items()):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_pattern(k % 4, rng)).save(folder / f"{i:03d}.png")
    return root


def tiny_cfg(**kw) -> PretrainConfig:
    base = dict(epochs=1, batch_size=8, optimizer="sgd", lr=0.05, device="cpu", warmup_epochs=0.0,
                preprocess={"size": SIZE, "remove_frame": False}, threads=1)
    base.update(kw)
    return PretrainConfig.parse(base)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "corpus", {"CT/lung/nodule": 6, "CT/lung/normal": 6, "US/thyroid/cyst": 6})


# ---------------------------------------------------------------------------------------------- corpus


def test_scan_folder_class_is_the_folder_path_below_the_root(tmp_path):
    root = write_tree(tmp_path / "c", {"CT/lung/nodule": 2, "benign": 1})
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "loose.png")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / ".hidden" / "x.png")
    (root / "benign" / "notes.txt").write_text("not an image")
    df = scan_folder(root)
    assert sorted(df["class"].unique()) == ["", "CT/lung/nodule", "benign"]
    assert df.set_index("image").loc["CT/lung/nodule/000.png", "class"] == "CT/lung/nodule"
    assert not df["image"].str.contains("hidden|notes").any()

    corpus = load_corpus(root, mode="supervised")
    assert len(corpus.manifest) == 3  # the loose file has no class
    assert any("without a class" in n for n in corpus.notes)
    assert len(load_corpus(root, mode="simclr").manifest) == 4


def test_csv_source_and_its_errors(tmp_path):
    root = write_tree(tmp_path / "c", {"a": 2, "b": 2})
    rows = [("a/000.png", "x"), ("a/001.png", "x"), ("b/000.png", "y"), ("b/001.png", "")]
    table = tmp_path / "c" / "list.csv"
    with open(table, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "organ"), *rows])
    corpus = load_corpus(table, class_column="organ", image_column="path")
    assert corpus.manifest.df["class"].tolist() == ["x", "x", "y"]
    assert corpus.manifest.root == root.resolve()
    with pytest.raises(DataError, match="--class-column"):
        load_corpus(table, image_column="path")
    one_class = tmp_path / "one.csv"
    one_class.write_text("image,class\nc/a/000.png,x\nc/a/001.png,x\n")
    with pytest.raises(DataError, match="at least two classes"):
        load_corpus(one_class)
    assert len(load_corpus(one_class, mode="simclr").manifest) == 2
    with pytest.raises(DataError, match="no such folder"):
        load_corpus(tmp_path / "missing")


def test_single_image_class_is_kept_with_a_warning_or_dropped_on_request(tmp_path):
    root = write_tree(tmp_path / "c", {"a": 3, "b": 3, "lonely": 1})
    cfg = tiny_cfg()
    tset = prepare(root, cfg, cache_dir=tmp_path / "cache")
    assert tset.classes == ["a", "b", "lonely"]
    assert any(n.startswith("warning") and "lonely" in n for n in tset.notes)
    tset2 = prepare(root, tiny_cfg(min_per_class=2), cache_dir=tmp_path / "cache")
    assert tset2.classes == ["a", "b"] and len(tset2.rows) == 6
    assert sorted(np.bincount(tset2.targets).tolist()) == [3, 3]


def test_unreadable_files_are_listed_skipped_and_remembered(tmp_path):
    root = write_tree(tmp_path / "c", {"a": 4, "b": 4})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG truncated")
    (root / "b" / "empty.jpg").write_bytes(b"")
    cache_dir = tmp_path / "cache"
    tset = prepare(root, tiny_cfg(), cache_dir=cache_dir)
    assert sorted(f[0] for f in tset.failures) == ["a/broken.png", "b/empty.jpg"]
    assert len(tset.rows) == 8 and tset.n_cached == 8
    assert any("2 unreadable" in n for n in tset.notes)
    assert not list(cache_dir.glob("*.partial"))  # the failed build's decoded rows were moved over
    images = tset.images()
    assert images.shape == (8, SIZE, SIZE) and images.reshape(8, -1).max(axis=1).min() > 0
    # a second run finds the finished cache at once and still reports the skipped files
    again = prepare(root, tiny_cfg(), cache_dir=cache_dir)
    assert again.cache_path == tset.cache_path and len(again.failures) == 2
    (root / "a" / "0.png").write_bytes(b"nope")
    (root / "b" / "1.png").write_bytes(b"nope")
    for f in list((root / "a").glob("*.png")) + list((root / "b").glob("*.png")):
        f.write_bytes(b"nope")
    with pytest.raises(DataError, match="none of the"):
        prepare(root, tiny_cfg(), cache_dir=tmp_path / "cache2")


# ------------------------------------------------------------------------------------------ training


def test_checkpoint_loads_as_a_study_arm_with_only_the_head_missing(tree, tmp_path):
    from thyro.models import build_model
    from thyro.models.checkpoint import read_checkpoint_info
    from thyro.models.weights.formats import read_safetensors

    out = tmp_path / "backbone.safetensors"
    result = pretrain(tree, out, tiny_cfg(epochs=2))
    assert result is not None and out.is_file()
    assert result.classes == ["CT/lung/nodule", "CT/lung/normal", "US/thyroid/cyst"]
    assert result.epochs_run == 2 and len(result.history) == 2
    log = (result.work_dir / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss") and len(log) == 3
    assert (result.work_dir / "skipped.csv").read_text().strip() == "image,reason"

    info = read_checkpoint_info(out)
    assert info["format"] == "thyro-backbone" and info["arch"] == "resnet18"
    assert info["input_spec"]["input_size"] == SIZE
    assert info["metadata"]["pretraining"]["classes"] == result.classes
    assert info["metadata"]["preprocess"]["size"] == SIZE

    model, report = build_model("resnet18", f"file:{out}")
    assert sorted(report.missing) == ["fc.bias", "fc.weight"]
    assert not report.unexpected and not report.mismatched and report.head_reinitialised
    saved, _ = read_safetensors(out)
    state = model.backbone.state_dict()
    assert torch.equal(state["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"])
    assert model.input_spec.mean[0] == pytest.approx(info["input_spec"]["mean"][0])
    with torch.no_grad():
        assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2,)


def test_resume_after_interruption_repeats_the_uninterrupted_run(tree, tmp_path):
    from thyro.models.weights.formats import read_safetensors

    cfg = tiny_cfg(epochs=2, checkpoint_every=1)  # 18 images, batch 8: 2 steps per epoch
    full = tmp_path / "full.safetensors"
    # uninterrupted, with 2 loader worker processes (kept across epochs); the cut run loads in-process
    pretrain(tree, full, cfg.model_copy(update={"workers": 2}), cache_dir=tmp_path / "cache")
    cut = tmp_path / "cut.safetensors"
    assert pretrain(tree, cut, cfg, cache_dir=tmp_path / "cache", max_steps=3) is None  # stops mid epoch 2
    assert not cut.exists()
    state = torch.load(cut.with_name("cut.pretrain") / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 1)
    result = pretrain(tree, cut, cfg, cache_dir=tmp_path / "cache")
    assert result.resumed_from == (1, 1)
    a, _ = read_safetensors(full)
    b, _ = read_safetensors(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k

    # other settings against the same work folder: refused unless --restart
    with pytest.raises(ConfigError, match="--restart"):
        pretrain(tree, cut, tiny_cfg(epochs=2, lr=0.01), cache_dir=tmp_path / "cache")
    again = pretrain(tree, cut, tiny_cfg(epochs=1, lr=0.01), cache_dir=tmp_path / "cache", resume=False)
    assert again.resumed_from is None and again.epochs_run == 1


def test_simclr_on_an_unlabelled_folder(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(_pattern(i % 4, rng)).save(root / f"scan{i:02d}.png")
    out = tmp_path / "ssl.safetensors"
    result = pretrain(root, out, tiny_cfg(mode="simclr", epochs=2, proj_dim=16, optimizer="adamw", lr=1e-3))
    assert result.classes == [] and result.n_images == 12
    losses = [float(r["train_loss"]) for r in result.history]
    assert all(np.isfinite(losses)) and losses[0] > 0.5
    from thyro.models import build_model

    _, report = build_model("resnet18", f"file:{out}")
    assert sorted(report.missing) == ["fc.bias", "fc.weight"] and not report.unexpected


def test_nt_xent_matches_a_written_out_reference():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 7), torch.randn(5, 7)
    t = 0.3
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / t
    n = len(z1)
    expected = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        expected.append(-(sim[i, pos] - torch.logsumexp(sim[i, others], dim=0)))
    assert nt_xent(z1, z2, t).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    # identical views score lower than unrelated ones
    assert nt_xent(z1, z1, t) < nt_xent(z1, z2, t)


def test_bad_settings_are_reported(tree, tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone"):
        pretrain(tree, tmp_path / "x.safetensors", tiny_cfg(arch="resnet19"))
    with pytest.raises(DataError, match="fewer than one batch"):
        pretrain(tree, tmp_path / "x.safetensors", tiny_cfg(batch_size=64))
    with pytest.raises(ConfigError):
        PretrainConfig.parse({"mode": "byol"})


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    from thyro.cli import main

    root = write_tree(tmp_path / "c", {"only": 3})
    code = main(["pretrain", str(root), "--out", str(tmp_path / "b.safetensors"), "--device", "cpu",
                 "--size", str(SIZE)])
    assert code == 2
    assert "at least two classes" in capsys.readouterr().err


def test_cli_prepare_only_builds_the_cache_for_a_later_run(tree, tmp_path, capsys):
    from thyro.cli import main

    cache = tmp_path / "cache"
    code = main(["pretrain", str(tree), "--out", str(tmp_path / "b.safetensors"), "--size", str(SIZE),
                 "--cache-dir", str(cache), "--prepare-only"])
    assert code == 0
    assert "18 images" in capsys.readouterr().out.replace("\n", " ")
    built = [p for p in cache.iterdir() if (p / "meta.json").is_file()]
    assert len(built) == 1 and not (tmp_path / "b.safetensors").exists()
    # the run finds that cache (same images, same preprocessing) instead of building another
    tset = prepare(tree, tiny_cfg(preprocess={"size": SIZE}), cache_dir=cache)
    assert tset.cache_path == built[0]


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_state(tree, tmp_path):
    from thyro.errors import TrainingError

    out = tmp_path / "nan.safetensors"
    with pytest.raises(TrainingError, match="the loss became"):
        pretrain(tree, out, tiny_cfg(epochs=3, lr=1e30))
    assert not out.exists()


def test_cli_config_file_values_win_over_option_defaults(tree, tmp_path, monkeypatch):
    """defaults < --config YAML < options typed on the command line (only those)."""
    import yaml

    import thyro.train.pretrain as pt
    from thyro.cli import main

    seen = {}
    monkeypatch.setattr(pt, "pretrain", lambda source, out, cfg, **kw: seen.setdefault("cfg", cfg))
    cfg_file = tmp_path / "pretrain.yaml"
    cfg_file.write_text(yaml.safe_dump({"pretrain": {
        "arch": "resnet50", "mode": "simclr", "epochs": 5, "batch_size": 64, "optimizer": "adamw", "lr": 3e-4,
        "device": "cpu", "workers": 2, "seed": 7, "threads": 3, "preprocess": {"size": 96, "remove_frame": False}}}))
    assert main(["pretrain", str(tree), "--out", str(tmp_path / "b.safetensors"), "--config", str(cfg_file)]) == 0
    cfg = seen.pop("cfg")
    assert (cfg.arch, cfg.mode, cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr) == ("resnet50", "simclr", 5, 64,
                                                                                         "adamw", 3e-4)
    assert (cfg.device, cfg.workers, cfg.seed, cfg.threads) == ("cpu", 2, 7, 3)
    assert cfg.preprocess.size == 96 and cfg.preprocess.remove_frame is False
    # an option typed on the command line wins over the file, and only that one
    assert main(["pretrain", str(tree), "--out", str(tmp_path / "b.safetensors"), "--config", str(cfg_file),
                 "--epochs", "7", "--size", "64"]) == 0
    cfg = seen.pop("cfg")
    assert (cfg.epochs, cfg.preprocess.size, cfg.batch_size, cfg.arch) == (7, 64, 64, "resnet50")
    assert cfg.preprocess.remove_frame is False
    # without a file: the defaults, and the learning rate follows the optimiser
    assert main(["pretrain", str(tree), "--out", str(tmp_path / "b.safetensors"), "--optimizer", "adamw"]) == 0
    assert seen.pop("cfg").lr == 1e-3
