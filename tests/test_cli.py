"""Every command answers --help, and errors come without a traceback."""

from __future__ import annotations

import click
import pytest
import typer.main

from thyro.cli import app, main


def _all_command_paths():
    root = typer.main.get_command(app)
    paths = []

    def walk(cmd, prefix):
        paths.append(prefix)
        if isinstance(cmd, click.Group):
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
