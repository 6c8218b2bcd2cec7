"""``thyro data`` commands for preprocessing, the cache, previews and the phantom."""

from __future__ import annotations

import typer


def add_commands(data_app: typer.Typer) -> None:
    """Add the preprocessing/phantom commands to the ``data`` group."""
