"""Help text of every command: a one-line summary, paragraphs the terminal wraps, and examples.

typer renders help with rich: a line break inside a paragraph is kept as it is (so a docstring wrapped
at 100 columns shows broken lines in an 80-column terminal), and square brackets are markup.  Commands
are therefore registered through :func:`command` (and groups through :func:`group`), which joins each
paragraph into one line for the terminal to wrap, escapes the markup, and adds an "Examples" block
(typer's epilog) whose lines are kept as written.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import typer
from rich.markup import escape

#: What every help that takes a path says about where a relative path starts.
PATHS = ("Paths typed on the command line (arguments, options, --set KEY=PATH) are relative to the current "
         "directory; paths inside a file (a study configuration, a manifest) are relative to that file's folder.")

EXAMPLE_PROMPT = "  $ "


def tidy(text: str | None) -> str:
    """``text`` with each paragraph on one line (the terminal wraps it) and rich markup escaped."""
    paragraphs = inspect.cleandoc(text or "").split("\n\n")
    return "\n\n".join(escape(" ".join(p.split())) for p in paragraphs if p.strip())


def epilog(examples: Sequence[str]) -> str:
    """The "Examples" block: one command per line, kept as written (markup escaped)."""
    if not examples:
        raise ValueError("every command shows at least one example")
    return "[bold]Examples[/]\n" + "\n".join(EXAMPLE_PROMPT + escape(e) for e in examples)


def examples_of(command_epilog: str | None) -> list[str]:
    """The example command lines of an epilog written by :func:`epilog` (for tests and docs)."""
    out = []
    for line in (command_epilog or "").splitlines():
        if line.startswith(EXAMPLE_PROMPT):
            out.append(line[len(EXAMPLE_PROMPT):].replace("\\[", "["))
    return out


def command(app: typer.Typer, name: str, examples: Sequence[str], **kwargs) -> Callable:
    """Register the decorated function as ``app``'s command ``name`` with tidy help and ``examples``."""
    def register(fn: Callable) -> Callable:
        app.command(name, help=tidy(fn.__doc__), epilog=epilog(examples), **kwargs)(fn)
        return fn

    return register


def group(help: str, examples: Sequence[str]) -> typer.Typer:
    """A command group (``thyro data``, ``thyro weights``) with tidy help and ``examples``."""
    return typer.Typer(help=tidy(help), epilog=epilog(examples), no_args_is_help=True)


def arguments_read_as_names() -> None:
    """Show arguments as ``MODEL_DIR`` (click's convention) rather than typer's ``{model_dir}``.

    Recent typer releases write a required argument as ``{name}`` in the usage line, which reads like
    a placeholder for braces; the upper-case name is what the rest of the help and the docs use.
    A no-op with typers that do not have these methods.
    """
    try:
        from typer.core import TyperArgument  # lazy: a typer without this class is handled below
    except ImportError:  # pragma: no cover
        return
    if getattr(TyperArgument, "_thyro_names", False):
        return

    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else self.name.upper()

    def usage_name(self) -> str:
        name = display_name_raw(self)
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    if isinstance(getattr(TyperArgument, "display_name_raw", None), property):
        TyperArgument.display_name_raw = property(display_name_raw)
    if hasattr(TyperArgument, "_usage_display_name"):
        TyperArgument._usage_display_name = usage_name
    TyperArgument._thyro_names = True
