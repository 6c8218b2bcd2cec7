"""Commands of the data area: ``thyro data ...``."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Import, validate, inspect, split, preprocess and preview image data.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    from thyro.cli import data_prep

    data_prep.add_commands(data_app)
    app.add_typer(data_app, name="data")
