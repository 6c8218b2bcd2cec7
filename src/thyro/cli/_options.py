"""Command-line option helpers shared by the command modules."""

from __future__ import annotations

import typer


def typed_options(ctx: typer.Context, names: dict[str, str]) -> dict[str, object]:
    """The options a user actually typed (or set through the environment), as ``{setting key: value}``.

    ``names`` maps a parameter name to the dotted configuration key it sets.  Options left at their
    default are not included, so they cannot overwrite a value from a configuration file.
    """
    out: dict[str, object] = {}
    for param, key in names.items():
        source = ctx.get_parameter_source(param)
        # compared by name: typer may vendor its own copy of click's ParameterSource enum
        if getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            out[key] = ctx.params[param]
    return out
