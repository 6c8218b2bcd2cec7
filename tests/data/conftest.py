"""Fixtures shared by the data tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ddti_import(ddti_dir, tmp_path_factory, request):
    """DDTI imported once per test session (shared by the data tests through the pytest config)."""
    cached = getattr(request.config, "_thyro_ddti_import", None)
    if cached is None:
        from thyro.cli.console import is_quiet, set_quiet
        from thyro.data.importers import import_ddti

        quiet = is_quiet()
        set_quiet(True)
        try:
            cached = import_ddti(ddti_dir, tmp_path_factory.mktemp("ddti-import"))
        finally:
            set_quiet(quiet)
        request.config._thyro_ddti_import = cached
    return cached
