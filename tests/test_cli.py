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


def _commands():
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, prefix):
        out.append((prefix, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, prefix + [name])

    walk(root, [])
    return out


def _parse(argv: list[str]):
    """The command path ``thyro ARGV`` resolves to, parsed as the command line would (options checked, nothing
    run)."""
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("thyro", list(argv))
    while hasattr(cmd, "resolve_command"):
        rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []) + ctx.args
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)
    return ctx.command_path


@pytest.mark.parametrize("path, cmd", _commands(), ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_every_help_has_a_one_line_summary_unbroken_paragraphs_and_examples_that_parse(path, cmd):
    import shlex

    from thyro.cli._help import examples_of

    paragraphs = (cmd.help or "").split("\n\n")
    summary = paragraphs[0]
    assert summary and "\n" not in summary and len(summary) <= 110 and summary[-1] in ".?", summary
    assert all("\n" not in p for p in paragraphs), "a paragraph with a hard line break wraps badly"
    examples = examples_of(cmd.epilog)
    assert examples, f"thyro {' '.join(path)}: no example"
    for example in examples:
        words = shlex.split(example)
        words = words[words.index("thyro") + 1:]  # `torchrun ... -m thyro pretrain ...` too
        if ">" in words:
            words = words[:words.index(">")]
        resolved = _parse(words)
        assert resolved.startswith(" ".join(["thyro", *path])), example  # a group's examples name its commands


def test_help_says_where_relative_paths_start(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    for argv in (["--help"], ["study", "--help"], ["train", "--help"]):
        assert main(argv) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "relative to the current directory" in out, argv
        assert "relative to the file's folder" in out or "relative to that file's folder" in out, argv


def test_usage_lines_name_arguments_without_braces(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: thyro predict [OPTIONS] MODEL_DIR INPUTS..." in out
    for path, _ in _commands():
        assert main(path + ["--help"]) == 0
        usage = next(line for line in capsys.readouterr().out.splitlines() if "Usage:" in line)
        assert "{" not in usage, usage


def test_help_wraps_inside_the_terminal_and_keeps_every_word(capsys, monkeypatch):
    """At 80 columns no line is longer, and the summary and examples survive rich's markup intact."""
    from thyro.cli._help import examples_of

    monkeypatch.setenv("COLUMNS", "80")
    for path, cmd in _commands():
        assert main(path + ["--help"]) == 0
        out = capsys.readouterr().out
        assert max(len(line) for line in out.splitlines()) <= 80
        flat = " ".join(out.split())
        assert " ".join(cmd.help.split("\n\n")[0].replace("\\[", "[").split()) in flat
        for example in examples_of(cmd.epilog):
            assert " ".join(example.split()) in flat, example


def test_demo_quick_runs_every_step_smaller_in_its_own_folder(monkeypatch, tmp_path):
    import thyro.train.demo as demo

    calls = []
    done = demo.DemoResults(study="demo", best_auroc={"new-patients": 0.9}, seconds=0.0)
    monkeypatch.setattr(demo, "run_demo", lambda out, **kw: calls.append((out, kw)) or done)
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "demo", "--quick"]) == 0
    assert main(["-q", "demo", "--quick", "--epochs", "3", "--out", "x"]) == 0
    assert main(["-q", "demo"]) == 0
    (quick_out, quick), (out2, quick3), (full_out, full) = calls
    assert str(quick_out) == "thyro-demo-quick" and quick["patients"] == demo.QUICK["patients"] < 120
    assert quick["corpus_scale"] < 1 and quick3["epochs"] == 3 and str(out2) == "x"
    assert str(full_out) == "thyro-demo" and "patients" not in full and "corpus_scale" not in full
