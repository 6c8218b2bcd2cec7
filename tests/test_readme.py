"""The README as a new user follows it: a fresh clone, the set-up in a new virtual environment made the
README's way, then every command of the README in order; each exits 0 with no traceback.

What the commands are run on, and the three allowances that keep this to minutes (printed in the log):

- the demo runs as ``thyro demo --quick``, the option the README gives for a quick look (every step, a
  fraction of the size);
- the data the README's commands name (``images/``, ``../shared/data/ddti``, ``my_table.csv``,
  ``new_images/``, ``scan.dcm``, ``radimagenet/``) and the weights its study needs (an ImageNet file in
  the Hugging Face cache, ``weights/radimagenet-resnet18.safetensors``) are made here, small, from the
  phantom; nothing is downloaded but what pip installs;
- the study and the pretraining command get speed settings appended (``--set train.epochs=1
  --set preprocess.size=32 ...``; ``--epochs 1 --size 32 ...``) and ``thyro serve`` a free port (the README's
  8000 may be taken): everything else about them (configuration, paths, weights, report) is as written.

The README's test command is this suite itself: it is not run here; ``.ci/run`` runs it (checked below).
The clone is of the committed HEAD, so commit before running this test on a change.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.readme]

#: Programs a README command line starts with (other indented blocks are trees and tables).
PROGRAMS = ("python3", "thyro", "torchrun", ".venv/bin/thyro", ".venv/bin/python")
STUDY_SPEED = ["--set", "train.epochs=1", "--set", "preprocess.size=32", "--set", "data.folds=2",
               "--set", "train.batch_size=8", "--set", "train.threads=1"]
PRETRAIN_SPEED = ["--epochs", "1", "--size", "32", "--batch-size", "16", "--threads", "1"]


def readme_commands(text: str) -> list[list[str]]:
    """The README's command blocks, in order: each a list of command lines (comment-only lines dropped)."""
    blocks: list[list[str]] = []
    current: list[str] = []
    in_fence = False
    lines = text.splitlines() + [""]
    for k, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if not in_fence and line.startswith("    ") and line.strip():
            current.append(line[4:])
            continue
        following = next((x for x in lines[k + 1:] if x.strip()), "")
        if current and not line.strip() and following.startswith("    "):
            continue  # a blank line inside an indented block
        if current:
            commands = [c for c in current if not c.lstrip().startswith("#")]
            commands = [c.strip() for c in commands]  # a block inside a list item is indented further
            if commands and commands[0].split()[0] in PROGRAMS:
                blocks.append(commands)
            current = []
    return blocks


def test_readme_blocks_are_what_this_test_expects():
    """The set-up, the test command, the walkthrough and pretraining, in that order; CI runs the test command."""
    blocks = readme_commands((REPO / "README.md").read_text())
    assert [b[0].split()[0] for b in blocks] == ["python3", "python3", "thyro", "torchrun", "thyro"]
    assert blocks[4][0].strip().startswith("thyro weights inspect --arch efficientnet_lite0")
    setup, tests = blocks[0][0], blocks[1][0]
    assert "-e '.[all]'" in setup and setup.endswith("&& .venv/bin/thyro demo")
    assert tests in (REPO / ".ci" / "run").read_text()
    assert "thyro demo --quick" in (REPO / "README.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_inputs(clone: Path, home: Path) -> None:
    """The small data set and the weights the README's commands name."""
    from PIL import Image

    from thyro.data.phantom import generate_cohort, generate_corpus

    cohort = generate_cohort(home / "cohort", n_patients=48, size=96, seed=5)
    import pandas as pd

    df = pd.read_csv(cohort)
    for image, label in zip(df["image"], df["label"]):  # images/benign/P0001_v1.png, ...
        folder = clone / "images" / ("malignant" if label == 1 else "benign")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(cohort.parent / image, folder / Path(image).name)
    site_b = generate_cohort(clone / "site-b-images", n_patients=12, size=96, seed=9)
    table = pd.read_csv(site_b)[["image", "label", "patient_id"]]
    table["image"] = "site-b-images/" + table["image"]
    table.to_csv(clone / "my_table.csv", index=False)
    new = clone / "new_images"
    new.mkdir()
    for image in df["image"][:3]:
        shutil.copy(cohort.parent / image, new / Path(image).name)
    from use.conftest import write_dicom

    write_dicom(clone / "scan.dcm", np.asarray(Image.open(cohort.parent / df["image"][0]).convert("L")))
    _fake_ddti(clone.parent / "shared" / "data" / "ddti", cohort.parent, list(df["image"][:6]))
    generate_corpus(clone / "radimagenet", n_per_class=2, size=64, seed=1)
    _weights(clone, home)


def _fake_ddti(folder: Path, root: Path, images: list[str]) -> None:
    """DDTI's layout: {case}_{k}.jpg and {case}.xml with the TI-RADS category and the nodule outline."""
    from PIL import Image

    folder.mkdir(parents=True)
    outline = json.dumps([{"points": [{"x": 10, "y": 10}, {"x": 40, "y": 12}, {"x": 30, "y": 40}],
                           "annotation": {}, "regionType": "freehand"}])
    for case, image in enumerate(images, start=1):
        Image.open(root / image).convert("RGB").save(folder / f"{case}_1.jpg", quality=95)
        tirads = ["2", "3", "4a", "4c", "5", "4b"][case % 6]
        (folder / f"{case}.xml").write_text(
            f"<case><number>{case}</number><age>50</age><sex>F</sex><composition>solid</composition>"
            f"<echogenicity></echogenicity><margins></margins><calcifications></calcifications>"
            f"<tirads>{tirads}</tirads><reportbacaf></reportbacaf>"
            f"<mark><image>1</image><svg>{outline}</svg></mark></case>")


def _weights(clone: Path, home: Path) -> None:
    """ImageNet weights in the Hugging Face cache (timm's layout) and a RadImageNet-style backbone file."""
    import timm
    from safetensors.torch import save_file

    snapshot = home / "hf" / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "0"
    snapshot.mkdir(parents=True)
    imagenet = _trained_look(timm.create_model("resnet18", pretrained=False))
    save_file(imagenet.state_dict(), str(snapshot / "model.safetensors"))
    from thyro.models import build_model, save_backbone

    model, _ = build_model("resnet18", "none")
    (clone / "weights").mkdir()
    save_backbone(clone / "weights" / "radimagenet-resnet18.safetensors", _trained_look(model))


def _trained_look(model):
    """Random weights whose BatchNorm statistics moved from 0 and 1, as training moves them: thyro refuses
    tensors still at their initialisation as a pretrained start, and the README's arms say nothing about that."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


class Runner:
    """Runs README lines in the clone with the README's virtual environment active; keeps a log."""

    def __init__(self, clone: Path, env: dict, log: Path):
        self.clone, self.env, self.log = clone, env, log
        self.seconds: dict[str, float] = {}

    def run(self, line: str, timeout: float = 900) -> str:
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", "-c", line], cwd=self.clone, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        self.seconds[line] = time.perf_counter() - t0
        out = proc.stdout + proc.stderr
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"$ {line}\n[exit {proc.returncode}, {self.seconds[line]:.0f} s]\n{out[-4000:]}\n")
        assert proc.returncode == 0, f"{line}\nexit {proc.returncode}:\n{out[-3000:]}"
        assert "Traceback" not in out, f"{line}\n{out[-3000:]}"
        # no warning of a library that a user cannot act on (thyro's own notes say what to do)
        assert not re.search(r"\b[A-Z]\w*Warning\b", out), f"{line}\n{out[-3000:]}"
        return out

    def serve(self, line: str) -> None:
        port = _free_port()
        argv = shlex.split(line.split("#")[0]) + ["--port", str(port)]
        proc = subprocess.Popen(argv, cwd=self.clone, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, stdin=subprocess.DEVNULL)
        try:
            health = None
            for _ in range(240):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                        health = json.loads(r.read())
                    break
                except OSError:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.5)
            assert health and health["status"] == "ok", proc.stdout.read() if proc.poll() is not None else "no answer"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                assert r.status == 200 and b"<html" in r.read().lower()
        finally:
            proc.send_signal(signal.SIGINT)
            out = proc.communicate(timeout=60)[0]
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(argv)}\n[exit {proc.returncode}]\n{out[-2000:]}\n")
        assert "Traceback" not in out, out[-3000:]


def test_every_readme_command_works_from_a_fresh_clone(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of thyro")
    root = tmp_path / "work"
    root.mkdir()
    clone = root / "thyro"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{clone / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(clone / ".venv"),
               THYRO_CACHE_DIR=str(home / "thyro-cache"), HF_HOME=str(home / "hf"),
               TORCH_HOME=str(home / "torch"), HF_HUB_OFFLINE="1", COLUMNS="120",
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")))
    log = tmp_path / "readme.log"
    runner = Runner(clone, env, log)
    print(f"README walkthrough log: {log}")
    blocks = readme_commands((clone / "README.md").read_text())
    setup, _tests, walkthrough, pretraining, lite0 = blocks

    # 1. the set-up: a fresh venv, the README's install, the demo (quick)
    line = setup[0]
    assert line.endswith(" && .venv/bin/thyro demo")
    runner.run(line + " --quick", timeout=1800)
    assert (clone / "thyro-demo-quick" / "run" / "report.html").is_file()

    # 2. the walkthrough on data made here
    _prepare_inputs(clone, home)
    for line in walkthrough:
        words = shlex.split(line, comments=True)
        if words[:2] == ["thyro", "serve"]:
            runner.serve(line)
        elif words[:2] == ["thyro", "study"]:
            runner.run(shlex.join(words + STUDY_SPEED))
        else:
            runner.run(line)
    for made in ("data/mine/manifest.csv", "data/ddti/manifest.csv", "data/site-b/manifest.csv", "sheet.png",
                 "runs/jacr2024/report.html", "model/MODEL_CARD.md", "predictions.csv", "heatmaps/index.csv",
                 "model/model.onnx", "predictions-onnx.csv"):
        assert (clone / made).is_file(), made
    mine = (clone / "data" / "mine" / "manifest.csv").read_text()
    # image paths relative to the manifest's folder, the patient read by --patient-pattern
    assert re.search(r"^\.\./\.\./images/benign/(P\d{4})_v\d\.png,0,\1,", mine, flags=re.M), mine[:300]

    # 3. pretraining at scale (the README's torchrun line), on the small corpus
    for line in pretraining:
        runner.run(shlex.join(shlex.split(line, comments=True) + PRETRAIN_SPEED))
    assert (clone / "weights" / "radimagenet-resnet18.safetensors").is_file()
    # 4. real ImageNet weights from the lite0 extra (in `all`): the file as thyro reads it, the study that uses it
    for line in lite0:
        words = shlex.split(line, comments=True)
        out = runner.run(shlex.join(words + STUDY_SPEED) if words[:2] == ["thyro", "study"] else line)
        if words[:2] == ["thyro", "weights"]:
            assert "efficientnet-lite0-57934424.pth" in out and "efficientnet_pytorch" in out, out[-2000:]
    assert (clone / "runs" / "imagenet_lite0" / "report.html").is_file()

    with open(log, "a", encoding="utf-8") as fh:
        fh.write("seconds: " + json.dumps({k[:60]: round(v) for k, v in runner.seconds.items()}) + "\n")
    print(log.read_text()[-1500:], file=sys.stderr)
