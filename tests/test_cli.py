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
