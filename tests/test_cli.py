"""Every command answers --help, and errors come without a traceback."""

from __future__ import annotations

import pytest
import typer.main

from thyro.cli import app, main


def _all_command_paths():
    root = typer.main.get_command(app)
    paths = []

    def walk(cmd, prefix):
        paths.append(prefix)
        if hasattr(cmd, "commands"):  # a group (typer bundles its own click)
            for name, sub in cmd.commands.items():
                walk(sub, prefix + [name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "thyro")
def test_help_on_every_command(path, capsys):
    assert main(path + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out
    assert "<bool>" not in out  # flags read as flags, not as options taking a value


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "thyro" in capsys.readouterr().out


def test_every_area_registers_commands():
    names = {" ".join(p) for p in _all_command_paths()}
    for expected in ("data import ddti", "data split", "data phantom", "weights inspect", "study", "train", "demo",
                     "report", "compare", "predict", "export", "serve", "pretrain"):
        assert expected in names, expected


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    from thyro.fileio import write_text

    write_text(tmp_path / "a.txt", "x")
    mode = os.stat(tmp_path / "a.txt").st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_help_text_keeps_brackets_and_lists_real_commands(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["predict", "--help"]) == 0
    assert '{"box": [x0,y0,x1,y1]}' in capsys.readouterr().out
    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    group = typer.main.get_command(app).commands["data"]
    for name in group.commands:
        assert name in out
    assert "preprocess " not in out.split("Commands")[1] if "Commands" in out else True


def test_every_out_option_has_the_short_form(capsys):
    """-o is --out (or --run-dir) everywhere."""
    missing = []
    root = typer.main.get_command(app)

    def walk(cmd, prefix):
        for p in getattr(cmd, "params", []):
            if "--out" in p.opts and "-o" not in p.opts:
                missing.append(" ".join(prefix))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, prefix + [name])

    walk(root, [])
    assert not missing, missing
