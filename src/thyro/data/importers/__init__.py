"""thyro.data.importers: bring images and labels in as a manifest.

``import_ddti`` (DDTI XML layout), ``import_folders`` (one folder per class), ``import_csv`` (a table
in the manifest schema).  Each writes ``manifest.csv`` (images referenced by relative path, not
copied) and ``import_report.json`` atomically, with duplicate images merged into leakage groups.
"""

from thyro.data.importers._common import ImportResult
from thyro.data.importers.csv import import_csv
from thyro.data.importers.ddti import import_ddti
from thyro.data.importers.folders import import_folders

__all__ = ["ImportResult", "import_csv", "import_ddti", "import_folders"]
