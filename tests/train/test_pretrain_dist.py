"""Pretraining with two processes on the CPU (Gloo), started by torchrun as a user would start it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from thyro.models.weights.formats import read_safetensors
from thyro.train.pretrain import PretrainConfig, pretrain

SIZE = 32


def write_tree(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """``classes``: folder below ``root`` -> number of 40 x 40 PNG images (a pattern per class)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, (cls, n) in enumerate(classes.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = (rng.random((40, 40)) * 50).astype(np.uint8)
            img[:, k::4] += 150
            Image.fromarray(img).save(root / cls / f"{i:03d}.png")
    return root

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch without Gloo")

WORKER = """
import json, sys
import torch.distributed as dist
from thyro.cli._output import setup
from thyro.train.pretrain import PretrainConfig, pretrain

setup()  # the library logs; show its records as the command line does
source, out_dir, configs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
dist.init_process_group("gloo")
for name, cfg in configs.items():
    pretrain(source, f"{out_dir}/{name}.safetensors", PretrainConfig.parse(cfg), work_dir=f"{out_dir}/{name}.work",
             cache_dir=f"{out_dir}/cache")
dist.destroy_process_group()
"""


def _torchrun(args: list[str], env_extra: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env_extra or {})}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-3000:]}")
    return out


def _cfg(**kw) -> dict:
    base = dict(epochs=1, batch_size=8, optimizer="sgd", lr=0.2, warmup_epochs=0.0, device="cpu", threads=1,
                augment={"enabled": False}, sync_bn=True, preprocess={"size": SIZE, "remove_frame": False})
    base.update(kw)
    return base


def test_two_processes_take_the_same_step_as_one(tmp_path):
    """Augmentation off, SyncBatchNorm on: one step over the same global batch of 8 gives the same weights
    (and BatchNorm running statistics) with 2 Gloo processes x 4 images as with 1 process x 8 images."""
    tree = write_tree(tmp_path / "c", {"a": 4, "b": 4})
    configs = {"supervised": _cfg(), "simclr": _cfg(mode="simclr", proj_dim=16)}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = _torchrun([str(script), str(tree), str(tmp_path / "ddp"), json.dumps(configs)])
    for name, cfg in configs.items():  # the single-process references run meanwhile
        pretrain(tree, tmp_path / "one" / f"{name}.safetensors", PretrainConfig.parse(cfg),
                 cache_dir=tmp_path / "one" / "cache")
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert out.count("2 process(es) x 4 = batch 8") == 2  # rank 0 logs, rank 1 is quiet

    from thyro.models.backbones import create_backbone

    init = create_backbone("resnet18", seed=0).state_dict()
    for name in configs:
        one, _ = read_safetensors(tmp_path / "one" / f"{name}.safetensors")
        two, _ = read_safetensors(tmp_path / "ddp" / f"{name}.safetensors")
        assert one.keys() == two.keys()
        moved = max((one[k].float() - init[k].float()).abs().max().item() for k in one if k.endswith("weight"))
        assert moved > 1e-3, f"{name}: the step hardly changed the weights ({moved}); the test would prove nothing"
        for k in one:
            assert torch.allclose(one[k].float(), two[k].float(), rtol=1e-4, atol=2e-5), \
                f"{name}: {k} differs by {(one[k].float() - two[k].float()).abs().max().item():.2e}"
        assert not torch.equal(one["bn1.running_var"], init["bn1.running_var"])


@pytest.mark.slow
def test_torchrun_cli_end_to_end_gives_a_study_backbone(tmp_path):
    from thyro.data.phantom import CORPUS_CLASSES, generate_corpus
    from thyro.models import build_model

    csv_path = generate_corpus(tmp_path / "corpus", n_per_class=6, size=64, seed=0, classes=list(CORPUS_CLASSES[:3]))
    corpus = csv_path.parent
    (corpus / CORPUS_CLASSES[0] / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "radiology-r18.safetensors"
    proc = _torchrun(["-m", "thyro", "pretrain", str(corpus), "--out", str(out), "--size", str(SIZE),
                      "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--checkpoint-every", "1",
                      "--threads", "1"])
    log = _finish(proc)
    assert proc.returncode == 0, log[-3000:]
    assert log.count("1 unreadable image(s) skipped") == 1
    work = tmp_path / "radiology-r18.pretrain"
    assert "corrupt.png" in (work / "skipped.csv").read_text()
    assert len((work / "log.csv").read_text().splitlines()) == 3
    model, report = build_model("resnet18", {"file": str(out)})
    assert sorted(report.missing) == ["fc.bias", "fc.weight"] and len(report.loaded) == report.n_total - 2
    assert model.input_spec.input_size == SIZE


def _worker_pid(tag: str, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"THYRO_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_a_dead_rank_stops_the_job_and_the_run_resumes(tmp_path, capsys):
    from thyro.cli import main

    tree = write_tree(tmp_path / "c", {"a": 8, "b": 8})
    out = tmp_path / "b.safetensors"
    args = ["pretrain", str(tree), "--out", str(out), "--size", str(SIZE), "--epochs", "50", "--batch-size", "8",
            "--device", "cpu", "--checkpoint-every", "1", "--threads", "1"]
    tag = uuid.uuid4().hex
    proc = _torchrun(["-m", "thyro", *args], env_extra={"THYRO_TEST_TAG": tag})
    last = tmp_path / "b.pretrain" / "last.pt"
    deadline = time.monotonic() + 90
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), _finish(proc, 5)[-3000:]
    pid = _worker_pid(tag, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    log = _finish(proc, 60)
    assert proc.returncode != 0, f"torchrun should report the failed job:\n{log[-3000:]}"
    assert not out.exists()
    state = torch.load(last, weights_only=True)  # the last checkpoint is whole
    done = int(state["epoch"]) * 2 + int(state["step"])
    assert done >= 1

    capsys.readouterr()
    code = main([*args, "--max-steps", str(done + 2)])  # the same command (here one process) continues
    assert code == 0
    assert "resuming from" in capsys.readouterr().out
    after = torch.load(last, weights_only=True)
    assert int(after["epoch"]) * 2 + int(after["step"]) == done + 2
