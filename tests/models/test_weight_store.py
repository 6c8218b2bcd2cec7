"""thyro's weights folder is safe to share: adds of one name are serialised, interrupted adds leave nothing that
`thyro weights list` shows, an unwritable folder is refused before any work, and `weights download` without a
network says so at once, in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from thyro.cli import main
from thyro.errors import WeightsError
from thyro.models.add import add_weights
from thyro.models.weights.store import list_stored, weights_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_looking(tmp_path_factory) -> Path:
    """A seeded ResNet-18 whose BatchNorm statistics are not at their initial values, saved as torchvision does."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("standin") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def test_two_adds_of_one_name_never_both_write(trained_looking):
    cmd = [sys.executable, "-m", "thyro", "weights", "add", str(trained_looking), "--arch", "resnet18"]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=600), *p.communicate()) for p in (first, second)]
    added = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert len(added) == 1 and len(refused) == 1, results
    assert "added" in added[0][1] and "added" not in refused[0][1]
    assert "is being added by" in refused[0][2] or "exists already" in refused[0][2], refused[0][2]
    [entry] = list_stored()
    assert entry["provenance"]["verification"]["method"] == "names"


def test_an_existing_entry_is_replaced_only_when_asked(trained_looking, capsys):
    assert main(["weights", "add", str(trained_looking), "--arch", "resnet18"]) == 0
    stored = weights_dir() / "resnet18.imagenet.safetensors"
    before = stored.stat().st_mtime_ns
    assert main(["weights", "add", str(trained_looking), "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and "add --force" in err and "force=True" not in err
    assert stored.stat().st_mtime_ns == before
    with pytest.raises(WeightsError, match="To replace it, pass force=True"):
        add_weights(trained_looking, "resnet18")
    assert main(["weights", "add", str(trained_looking), "--arch", "resnet18", "--force"]) == 0


def test_an_interrupted_add_leaves_nothing_that_list_shows(trained_looking, capsys):
    """A process killed while writing its entry (here: as soon as its temporary exists) leaves a temporary file;
    `weights list` neither shows it nor keeps it, and a live writer's temporary is left alone."""
    target = weights_dir() / "resnet18.imagenet.safetensors"
    code = ("import os, sys; from pathlib import Path; from thyro.fileio import atomic_path\n"
            "with atomic_path(Path(sys.argv[1]), suffix='.safetensors'):\n"
            "    os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", code, str(target)], env=_env(), check=False)
    left = [p for p in weights_dir().iterdir() if "thyro-tmp" in p.name]
    assert len(left) == 1 and left[0].stat().st_size == 0  # what an interrupted add leaves
    from thyro.fileio import temp_prefix

    live = weights_dir() / (temp_prefix("resnet18.other.safetensors") + "abcdefgh.safetensors")
    live.write_bytes(b"")  # this process's: still being written
    assert main(["weights", "list"]) == 0
    captured = capsys.readouterr()
    assert "holds no weights yet" in " ".join(captured.out.split()) and "thyro-tmp" not in captured.out
    assert "removed 1 temporary file" in " ".join(captured.err.split())
    assert not left[0].exists() and live.exists()
    assert list_stored() == []


def test_an_unwritable_weights_folder_is_refused_before_the_conversion(trained_looking, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    monkeypatch.setenv("THYRO_HOME", str(blocker / "home"))
    import thyro.models.add as add

    def never(*args, **kwargs):
        raise AssertionError("the conversion started")

    monkeypatch.setattr(add, "build_model", never)
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="cannot write to thyro's weights folder .*nothing was converted"):
        add_weights(trained_looking, "resnet18")
    assert time.perf_counter() - t0 < 1.0


_DOWNLOAD = ("import sys, time\nfrom thyro.cli import main\nimport thyro.models.add\n"
             "t = time.perf_counter()\nrc = main(['weights', 'download', 'resnet18'])\n"
             "print(f'{time.perf_counter() - t:.2f} {rc}')\n")


def _download(tmp_path: Path, **env: str) -> tuple[float, int, list[str]]:
    """``thyro weights download resnet18`` with huggingface_hub's offline mode off; the seconds it took once
    thyro was imported, its exit code and the lines of its standard error."""
    out = subprocess.run([sys.executable, "-c", _DOWNLOAD], env=_env(HF_HOME=str(tmp_path / "hf"), **env),
                         capture_output=True, text=True, timeout=300)
    seconds, rc = out.stdout.split()[-2:]
    return float(seconds), int(rc), [line for line in out.stderr.splitlines() if line.strip()]


def test_download_without_a_network_is_one_line_within_seconds(tmp_path):
    """This machine has no internet: the hub's name does not resolve."""
    seconds, rc, lines = _download(tmp_path)
    assert rc == 2 and seconds < 5.0, (seconds, lines)
    assert len(lines) == 1, lines  # no retry noise from huggingface_hub, and the line is whole
    line = lines[0]
    cache = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    assert line.startswith("error: could not download resnet18.a1_in1k") and "no connection to" in line
    assert str(cache) in line and "model.safetensors" in line and line.endswith("--arch resnet18`.")


def test_download_from_a_hub_that_never_answers_gives_up_within_seconds(tmp_path):
    with socket.socket() as server:  # accepts connections (the kernel's backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        seconds, rc, lines = _download(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}")
    assert rc == 2 and seconds < 5.0, (seconds, lines)
    assert len(lines) == 1 and "no answer from 127.0.0.1" in lines[0] and "within 2 s" in lines[0], lines


@pytest.mark.parametrize("wrapper", ["DataParallel", "Lightning", "MoCo query encoder"])
def test_wrapped_checkpoints_store_the_same_tensors(trained_looking, tmp_path, wrapper):
    """Prefixes are stripped by name: the stored entry holds exactly the tensors of the plain file's entry."""
    from safetensors.torch import load_file

    state = torch.load(trained_looking, weights_only=True)
    path = tmp_path / "wrapped.pth"
    if wrapper == "DataParallel":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif wrapper == "Lightning":
        torch.save({"epoch": 3, "pytorch-lightning_version": "2.4.0",
                    "state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
    else:  # the key encoder (the momentum copy) differs and must be left out
        torch.save({"epoch": 200, "state_dict": {f"module.encoder_q.{k}": v for k, v in state.items()}
                    | {f"module.encoder_k.{k}": v + 1 for k, v in state.items()}}, path)
    plain, _, _ = add_weights(trained_looking, "resnet18", name="plain")
    wrapped, report, prov = add_weights(path, "resnet18", name="wrapped")
    assert wrapper in (report.mapping or "") and prov["verification"]["method"] == "names"
    a, b = load_file(plain), load_file(wrapped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
