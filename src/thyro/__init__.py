"""thyro: transfer-learning studies for thyroid-nodule ultrasound classification.

The main entry points, loaded on first use (``import thyro`` itself imports nothing heavy):

``thyro.load(model_dir)``
    a model package to predict with: ``.predict(images)`` takes paths, PIL images or numpy arrays
    and returns a table (:class:`thyro.api.Model`);
``thyro.study(config)``
    run or continue a study (``thyro study``), returns its results;
``thyro.compare(a_csv, b_csv)``
    the paired AUROC comparison of two prediction files (``thyro compare``);
``thyro.report(run_dir)``
    write a study's report (``thyro report``); ``thyro.report`` is also the report package.

docs/python-api.md shows them in use.
"""

import importlib

__version__ = "0.1.0"

# The entry points live in thyro.api (the top layer: it uses data, models, training and the report); they
# are imported by name on first access so that `import thyro` stays as light as the version string.
_LAZY = {"load": "thyro.api", "Model": "thyro.api", "study": "thyro.api", "compare": "thyro.api",
         "report": "thyro.report"}

__all__ = ["Model", "__version__", "compare", "load", "report", "study"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'thyro' has no attribute {name!r}")
    value = importlib.import_module(module)
    if name != "report":  # thyro.report is the (callable) report package itself
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
