"""A missing optional package ends in one line naming the install command for this installation."""

from __future__ import annotations

import sys

import pytest

from thyro import optional
from thyro.cli import main
from thyro.errors import MissingDependency

REPO = optional.source_checkout()


def _block(monkeypatch, *names: str) -> None:
    """Make ``import NAME`` fail as it does when the package is not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_a_source_checkout_is_told_the_editable_command(monkeypatch, tmp_path):
    assert REPO is not None  # the tests run from the checkout
    monkeypatch.chdir(REPO)
    assert optional.install_command("serve").endswith("install -e '.[serve]'")
    assert not optional.install_command("serve").startswith("cd ")
    monkeypatch.chdir(tmp_path)  # elsewhere: the command goes to the checkout first
    assert optional.install_command("export").startswith(f"cd {REPO} && ")


def test_a_wheel_is_told_the_package_command(monkeypatch):
    monkeypatch.setattr(optional, "source_checkout", lambda: None)
    assert optional.install_command("serve").endswith("install 'thyro[serve]'")


def test_the_pip_named_is_the_running_interpreters(monkeypatch, tmp_path):
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "pip").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(optional, "source_checkout", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert optional.install_command("export") == "venv/bin/pip install 'thyro[export]'"
    (venv / "pip").unlink()
    assert optional.install_command("export") == f"{venv / 'python'} -m pip install 'thyro[export]'"


def test_require_names_every_missing_package_in_one_line(monkeypatch):
    _block(monkeypatch, "fastapi", "python_multipart", "multipart")
    with pytest.raises(MissingDependency) as info:
        optional.require("fastapi", "uvicorn", "python_multipart|multipart", purpose="thyro serve")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("thyro serve needs fastapi and python-multipart, which are not installed")
    assert "'.[serve]'" in text or "'thyro[serve]'" in text
    assert "uvicorn" not in text  # installed: not named


def test_require_returns_the_module_when_installed():
    assert optional.require("onnx", "onnxruntime", purpose="x").__name__ == "onnx"


def test_an_unknown_name_is_a_programming_error():
    with pytest.raises(KeyError):
        optional.require("numpyy", purpose="x")


@pytest.mark.parametrize("argv, blocked, extra", [
    (["export", "MODEL"], ["onnx"], "export"),
    (["serve", "MODEL"], ["fastapi"], "serve"),
])
def test_the_command_line_prints_one_line_with_the_brackets_kept(argv, blocked, extra, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLUMNS", "400")
    _block(monkeypatch, *blocked)
    argv = [str(tmp_path) if a == "MODEL" else a for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1, err
    assert f"[{extra}]'" in err  # rich markup did not eat the brackets


def test_predict_with_the_onnx_engine_says_what_to_install(model_dir, images, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    _block(monkeypatch, "onnxruntime")
    assert main(["predict", str(model_dir), str(images["png0"]), "--engine", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --engine onnx needs onnxruntime, which is not installed; install with: ")
    assert err.endswith("'.[export]'")


def test_tensorboard_missing_is_one_escaped_line(monkeypatch):
    text = optional.missing_message("TensorBoard logs", ["tensorboard"])
    assert "[tensorboard]'" in text and "\n" not in text
