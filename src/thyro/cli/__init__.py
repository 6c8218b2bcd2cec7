"""The ``thyro`` command line.  Thin: parse, call the API, print.  No logic lives here.

Each area registers its commands from its own module (``cli/data.py``, ``cli/weights.py``, ...).

Commands import what they run inside their own function, on purpose: ``thyro --help``, ``thyro
weights list`` or a typo answers without loading torch, timm, pandas or scipy (seconds on a small
machine), and a command whose optional package is missing fails alone.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from thyro import __version__
from thyro.cli._help import PATHS, arguments_read_as_names, epilog, tidy
from thyro.cli._output import setup as setup_output
from thyro.cli.console import err_console, set_quiet
from thyro.errors import ThyroError
from thyro.settings import DEFAULT_MAX_PIXELS, set_settings

app = typer.Typer(
    name="thyro",
    help=tidy(f"""Transfer-learning studies for thyroid-nodule ultrasound: data, weights, training, statistics, use.

    {PATHS} Each command's --help ends with examples.
    """),
    epilog=epilog(["thyro demo --quick", "thyro data import folders images/ --out data/mine",
                   "thyro study configs/jacr2024.yaml --set data.manifest=data/mine/manifest.csv",
                   "thyro -q predict model/ scan.dcm > predictions.csv"]),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = {"on": False}


def _flags_read_as_flags() -> None:
    """Show on/off options (``--restart``, ``--help``) without a value type.

    Recent typer releases print a type column for every option, so a flag reads ``--help <bool>`` as if
    it took a value.  A flag takes none: its type is left out (a no-op with typers that do not do this).
    """
    try:
        from typer.core import TyperOption  # lazy: a typer without this class is handled below
    except ImportError:  # pragma: no cover - a typer without this class
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_thyro_flags", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return shown(self, ctx)

    display_type_rich._thyro_flags = True
    TyperOption.display_type_rich = display_type_rich


_flags_read_as_flags()
arguments_read_as_names()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"thyro {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    max_pixels: int = typer.Option(None, "--max-pixels", min=1, envvar="THYRO_MAX_PIXELS", show_envvar=True,
                                   help=f"Largest image frame read, in pixels (width x height; default "
                                        f"{DEFAULT_MAX_PIXELS:,}). Larger files are refused from their header, "
                                        "undecoded."),
) -> None:
    set_quiet(quiet)
    _debug["on"] = debug or bool(os.environ.get("THYRO_DEBUG"))
    setup_output(quiet=quiet, debug=_debug["on"])
    if max_pixels is not None:
        set_settings(max_pixels=max_pixels)  # handed on to worker processes (thyro study --jobs N)


def _register_all() -> None:
    from thyro.cli import data, pretrain, stats, train, use, weights  # lazy: they import this package's helpers

    for module in (data, weights, train, stats, use, pretrain):
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``thyro`` console script."""
    try:
        app(args=argv, prog_name="thyro")
    except SystemExit as exc:  # typer/click exit codes
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if argv is not None:
            return code
        raise
    except ThyroError as exc:
        if _debug["on"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True, highlight=False)
        if argv is not None:
            return 2
        sys.exit(2)
    except (OSError, MemoryError) as exc:  # a file the system refused (permissions, a missing drive...)
        if _debug["on"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_system_error(exc))}", markup=True, soft_wrap=True,
                          highlight=False)
        if argv is not None:
            return 2
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: work finished so far is saved; run the same command again to resume.")
        if argv is not None:
            return 130
        sys.exit(130)
    return 0


def _system_error(exc: BaseException) -> str:
    """One line for an error of the system rather than of thyro's input checks."""
    if isinstance(exc, MemoryError):
        return "out of memory; use smaller batches (--batch-size) or fewer workers, or free memory, and run again."
    name = getattr(exc, "filename", None)
    what = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
    return f"{name}: {what}" if name else what
