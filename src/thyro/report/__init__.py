"""thyro.report: the study report (self-contained HTML and a Markdown summary).

``thyro.report(run_dir, out=None, ...)`` is :func:`build_report`: the package is callable, so the entry point
and the package share the name ``thyro.report`` whichever is imported first.
"""

import sys
import types

from thyro.report.build import build_report

__all__ = ["build_report"]


class _CallablePackage(types.ModuleType):
    def __call__(self, run_dir, out=None, **options):
        """Write a study's report (HTML and Markdown), as ``thyro report``; returns both paths."""
        return build_report(run_dir, out, **options)


sys.modules[__name__].__class__ = _CallablePackage
