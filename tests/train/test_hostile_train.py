"""Hostile and careless input to training: configuration overrides, thread counts, non-finite numbers,
study names, damaged or hostile resume files and full disks.  Each ends in one clear error naming the
key or file, never a traceback, and nothing already written is lost."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from thyro.cli import main
from thyro.errors import ConfigError, TrainingError
from thyro.config import TrainConfig
from thyro.train.fit import ArraySet, fit

def _study_yaml(tmp_path: Path, **extra) -> Path:
    cfg = {"name": "probe", "data": {"manifest": "nowhere/manifest.csv"},
           "arms": [{"name": "scratch", "backbone": "resnet18", "weights": "none"}], "train": {"epochs": 30},
           **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(args, capsys) -> tuple[int, str]:
    code = main(args)  # an exception escaping main() is a traceback: the test fails by itself
    cap = capsys.readouterr()
    return code, cap.out + cap.err


@pytest.mark.parametrize("setting, expect", [
    ("arms.0.weights=evil", "'arms.0.weights': Value error, weights: cannot read 'evil'"),
    ("train.epochs.x=1", "--set train.epochs.x: train.epochs is 30, a single value; it has no 'x' inside"),
    ("arms.3.lr=0.1", "--set arms.3.lr: arms is a list of 1 item(s); address one by its number, 0 to 0"),
    ("arms.name=x", "--set arms.name: arms is a list of 1 item(s)"),
    ("train..lr=1", "--set train..lr: empty part in the key"),
    ("train.threads=100000", "train.threads=100000: this machine has"),
    ("train.lr=.inf", "'train.lr': Input should be a finite number (got inf)"),
    ("train.lr=.nan", "'train.lr': Input should be a finite number (got nan)"),
    ("train.augment.rotate_deg=-.inf", "Input should be a finite number"),
    ("name=../../etc/x", "'name': Value error, a study name uses letters, digits"),
    ("train.epochs.x[/b]=1", "it has no 'x[/b]' inside"),  # rich markup in a message is printed as text
])
@pytest.mark.parametrize("command", ["study", "train"])
def test_set_overrides_end_in_one_clear_error(tmp_path, capsys, setting, expect, command):
    args = [command, str(_study_yaml(tmp_path)), "--set", setting]
    if command == "train":
        args += ["--arm", "scratch", "--fold", "0"]
    code, out = _cli(args, capsys)
    assert code == 2, out
    assert expect in out, out
    assert "Traceback" not in out


def test_non_finite_numbers_in_a_yaml_file_are_refused(tmp_path, capsys):
    path = _study_yaml(tmp_path, train={"lr": float("inf"), "weight_decay": float("nan")})
    assert "lr: .inf" in path.read_text()
    code, out = _cli(["study", str(path)], capsys)
    assert code == 2 and "'train.lr': Input should be a finite number" in out
    assert "'train.weight_decay': Input should be a finite number" in out


def test_the_study_name_cannot_leave_the_runs_folder(tmp_path, capsys):
    for name in ("../../etc/x", "/etc/x", ".hidden", "a/b", "x" * 101, ""):
        code, out = _cli(["study", str(_study_yaml(tmp_path, name=name))], capsys)
        assert code == 2 and "'name'" in out, (name, out)
    assert not (tmp_path.parent.parent / "etc").exists()


def _square_task(n=48, size=16, seed=0) -> ArraySet:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.float32)
    images = rng.integers(0, 120, size=(n, size, size)).astype(np.uint8)
    images[labels == 1, 5:11, 5:11] = 230
    return ArraySet(images, labels)


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 1))


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, lr=3e-3, warmup_epochs=0.0, device="cpu", tensorboard=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_threads_beyond_the_machine_stop_before_torch_sees_them(tmp_path):
    from thyro.machine import check_threads, usable_cpus

    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match=r"train.threads=100000: this machine has \d+ usable CPU"):
        fit(_tiny_net(), _square_task(), _square_task(seed=1), _cfg(threads=100_000), tmp_path)
    assert torch.get_num_threads() == before
    assert check_threads(usable_cpus()) == usable_cpus() and check_threads(None) is None


# ------------------------------------------------------------------------------------------------
# A damaged or hostile last.pt
# ------------------------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_last_pt(kind: str, job: Path, marker: Path) -> Path:
    job.mkdir(parents=True, exist_ok=True)
    path = job / "last.pt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all\n" * 10)
    elif kind == "hostile":
        with open(path, "wb") as fh:
            pickle.dump({"model": _Payload(marker)}, fh)
    elif kind == "hostile-zip":
        torch.save({"model": _Payload(marker)}, path)
    elif kind == "truncated":
        fit(_tiny_net(), _square_task(), _square_task(seed=1), _cfg(epochs=1), job)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "not-a-state":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "other-model":
        torch.save({"model": {"w": torch.zeros(3)}, "optimizer": {}, "scheduler": {}, "epoch": 0, "history": [],
                    "best_auroc": 0.5, "best_epoch": 0, "bad_epochs": 0}, path)
    return path


@pytest.mark.parametrize("kind", ["garbage", "hostile", "hostile-zip", "truncated", "not-a-state", "other-model"])
def test_bad_last_pt_is_named_with_the_way_out(tmp_path, kind):
    marker = tmp_path / "payload-ran"
    path = _bad_last_pt(kind, tmp_path / "job", marker)
    with pytest.raises(TrainingError) as info:
        fit(_tiny_net(), _square_task(), _square_task(seed=1), _cfg(), tmp_path / "job")
    text = str(info.value)
    assert text.startswith(f"{path} is unreadable") and "delete it or run with --restart" in text
    assert "weights_only" not in text and "\n" not in text
    assert not marker.exists()  # the hostile pickle never ran
    # --restart (resume=False) trains from scratch over it
    again = fit(_tiny_net(), _square_task(), _square_task(seed=1), _cfg(), tmp_path / "job", resume=False)
    assert again.epochs_run == 2


def test_cli_train_names_a_bad_last_pt(tmp_path, capsys, monkeypatch):
    """The command line's message for a damaged resume file is its one line, no traceback, and the pickle
    never runs."""
    from thyro.data.phantom import generate_cohort
    from thyro.run import JobKey, RunDir

    monkeypatch.setenv("THYRO_CACHE_DIR", str(tmp_path / "cache"))
    manifest = generate_cohort(tmp_path / "phantom", n_patients=30, size=64, seed=2)
    cfg = _study_yaml(tmp_path, data={"manifest": str(manifest), "folds": 2, "test_size": 0.2},
                      preprocess={"size": 32}, train={"epochs": 1, "batch_size": 16, "device": "cpu",
                                                      "selection": "last", "tensorboard": False})
    run = tmp_path / "run"
    marker = tmp_path / "ran"
    _bad_last_pt("hostile", RunDir(run).job_files(JobKey("scratch", 0)).folder, marker)
    code, out = _cli(["train", str(cfg), "--arm", "scratch", "--fold", "0", "--run-dir", str(run)], capsys)
    assert code == 2 and "last.pt is unreadable" in out and "--restart" in out and "weights_only" not in out
    assert not marker.exists()
    # --restart starts the job afresh and it trains
    code, out = _cli(["-q", "train", str(cfg), "--arm", "scratch", "--fold", "0", "--run-dir", str(run),
                      "--restart"], capsys)
    assert code == 0 and RunDir(run).is_done(JobKey("scratch", 0)) and not marker.exists()


def test_pretrain_names_a_bad_last_pt(tmp_path):
    from PIL import Image

    from thyro.train.pretrain import PretrainConfig, pretrain

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "corpus" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(tmp_path / "corpus" / cls / f"{i}.png")
    out = tmp_path / "bb.safetensors"
    marker = tmp_path / "ran"
    _bad_last_pt("hostile", tmp_path / "bb.pretrain", marker)
    cfg = PretrainConfig.parse(dict(epochs=1, batch_size=8, optimizer="sgd", lr=0.05, device="cpu", threads=1,
                                    preprocess={"size": 16, "remove_frame": False}))
    with pytest.raises(TrainingError, match=r"bb\.pretrain/last\.pt is unreadable .*--restart") as info:
        pretrain(tmp_path / "corpus", out, cfg)
    assert "weights_only" not in str(info.value) and not marker.exists()


# ------------------------------------------------------------------------------------------------
# A full disk
# ------------------------------------------------------------------------------------------------

def test_full_disk_while_checkpointing_keeps_the_last_good_state(tmp_path, monkeypatch):
    from thyro.errors import WriteError

    from thyro.train import fit as fit_mod

    job = tmp_path / "job"
    fit(_tiny_net(), _square_task(), _square_task(seed=1), _cfg(epochs=1), job)
    good = (job / "last.pt").read_bytes()
    def full_disk_save(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(fit_mod.torch, "save", full_disk_save)
    monkeypatch.setattr("thyro.fileio.atomic._low_space", lambda path: True)  # what a full disk reports
    with pytest.raises(WriteError) as info:
        fit(_tiny_net(), _square_task(), _square_task(seed=1), _cfg(epochs=3), job)
    assert str(info.value).startswith(f"no space left on device writing {job / 'last.pt'}; nothing was lost")
    assert (job / "last.pt").read_bytes() == good  # the previous state is intact
    assert not [p for p in job.iterdir() if p.name.startswith(".last.pt.")]  # no temporary left behind


def test_full_disk_errors_from_every_writer_become_one_message(tmp_path, monkeypatch):
    from thyro.errors import WriteError

    from thyro.fileio import atomic_path, write_failure, write_text

    target = tmp_path / "out.csv"
    write_text(target, "previous\n")
    monkeypatch.setattr("thyro.fileio.atomic._low_space", lambda path: False)
    for exc in (OSError(errno.ENOSPC, "No space left on device"),
                RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
                RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                             "data/0: file write failed")):
        with pytest.raises(WriteError) as info, atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise exc
        assert "writing " + str(target) + "; nothing was lost" in str(info.value)
        assert target.read_text() == "previous\n"
    assert write_failure(ValueError("bad value"), target) is None  # not every error is a write failure
    assert write_failure(RuntimeError("size mismatch for conv1.weight"), target) is None
    with pytest.raises(KeyError), atomic_path(target):
        raise KeyError("a bug in a writer is not a write failure")


def test_full_disk_while_building_the_cache(tmp_path, monkeypatch):
    from thyro.errors import WriteError

    from PIL import Image

    from thyro.data.cache import ImageCache
    from thyro.data.manifest import manifest_from_records
    from thyro.data.preprocess import PreprocessConfig

    for i in range(3):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    manifest = manifest_from_records([{"image": f"{i}.png", "label": i % 2, "patient_id": str(i), "group": str(i)}
                                      for i in range(3)], tmp_path)

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(WriteError, match=r"no space left on device writing .*images\.u8; nothing was lost"):
        ImageCache.build(manifest, PreprocessConfig(size=16), tmp_path / "cache", workers=1)


_FULL_DISK_SCRIPT = textwrap.dedent('''
    import sys, os, resource, signal
    from pathlib import Path
    target = Path(sys.argv[1]); mode = sys.argv[2]
    if mode == "rlimit":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    import numpy as np, torch
    from safetensors.torch import save_file
    from thyro.errors import WriteError
    from thyro.fileio import atomic_path, write_text
    write_text(target / "kept.txt", "earlier version\\n")
    writers = {
        "torch": lambda p: torch.save({"w": torch.zeros(200_000)}, p),
        "safetensors": lambda p: save_file({"w": torch.zeros(200_000)}, str(p)),
        "numpy": lambda p: np.save(p, np.zeros(200_000)),
        "text": lambda p: p.write_text("x" * 2_000_000),
    }
    for name, write in writers.items():
        try:
            with atomic_path(target / "kept.txt", suffix=".npy" if name == "numpy" else None) as tmp:
                write(tmp)
        except WriteError as exc:
            print(name, "|", exc)
        else:
            print(name, "| written")
    from thyro.cli import main
    main(["data", "split", sys.argv[3], "--out", str(target / "splits.json")])
    print("kept |", (target / "kept.txt").read_text().strip(), "|", sorted(os.listdir(target)))
''')


def _run_full_disk(tmp_path: Path, mode: str) -> str:
    import pandas as pd

    disk = tmp_path / "disk"
    disk.mkdir()
    manifest = tmp_path / "manifest.csv"
    n = 3000  # splits.json lists every image: about 90 KB, more than the 64 KiB there is room for
    pd.DataFrame({"image": [f"image-{i:05d}.png" for i in range(n)], "label": [i % 2 for i in range(n)],
                  "patient_id": [str(i) for i in range(n)], "group": [str(i) for i in range(n)]}).to_csv(manifest,
                                                                                                 index=False)
    script = tmp_path / "full.py"
    script.write_text(_FULL_DISK_SCRIPT)
    import thyro

    src = Path(thyro.__file__).resolve().parents[1]  # the thyro this test runs against
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(script), str(disk), mode, str(manifest)]
    if mode == "tmpfs":
        if shutil.which("unshare") is None:
            pytest.skip("unshare not installed")
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {disk}"],
                               capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs in a user namespace here ({probe.stderr.decode().strip()})")
        cmd = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=64k tmpfs "{disk}" && exec "$@"', "sh", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout + res.stderr


@pytest.mark.parametrize("mode", ["tmpfs", "rlimit"])
def test_a_really_full_disk(tmp_path, mode):
    """A 64 KiB tmpfs (a full disk: ENOSPC) or a 64 KiB file-size limit (EFBIG), for every writer and
    for a command end to end."""
    out = _run_full_disk(tmp_path, mode)
    reason = ("no space left on device" if mode == "tmpfs"
              else "file too large (a file-size limit of this system or its file system)")
    disk = tmp_path / "disk"
    for writer in ("torch", "safetensors", "numpy", "text"):
        line = next(x for x in out.splitlines() if x.startswith(writer + " |"))
        assert f"{reason} writing {disk / 'kept.txt'}; nothing was lost" in line, out
    assert "error: " in out and f"writing {disk / 'splits.json'}; nothing was lost" in out.replace("\n", " "), out
    assert "Traceback" not in out
    assert "kept | earlier version | ['kept.txt']" in out  # no partial file, the earlier version intact
