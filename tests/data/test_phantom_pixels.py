"""The phantom's output, pinned: small cohorts (plain, and with marks at both label sizes) and a small
corpus of every class hash to fixed digests, so reorganising the phantom's code cannot change a pixel.

The digests were produced by the single-module ``thyro/data/phantom.py`` of commit a388588, before it
was split into the ``thyro.data.phantom`` package: this file's digest functions run on that code (a
failing assertion prints the digest it computed).  They hash decoded pixels, not PNG bytes, and the
same pixels come out with OpenCV 4.12, 4.14, 5.0 and 5.1.  Change them only with a change that is meant
to change the phantom's images, and say so in its commit.
"""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pandas as pd
import pytest

from thyro.data.phantom import ALL_CORPUS_CLASSES, generate_cohort, generate_corpus

#: sha256 digests computed on commit a388588 (see the module docstring).
PINNED = {
    "cohort": "c46fbb375c7a9634457e5390d926b632775e8d2f2620bca7e9ba7b278a77b6ba",
    "cohort_marks_96": "1b545b59a01c1958d0cce91a0769389e0b69f19cc734fc7c364b67351bee1893",
    "cohort_marks_256": "8813cf44f394b35d2a17598bd5b0d5dc66ecf78fc5efcc3cb7d87bb83001a55f",
    "corpus": "dd5d3004a1e645a46c6417137cea23c731bece304c0692f846a152f6b43b49fa",
}


def _digest(folder, table: pd.DataFrame, images: list[str], columns: list[str], extra: str = "") -> str:
    """sha256 over the table's ``columns`` and every image's name, shape and decoded pixels."""
    h = hashlib.sha256()
    h.update(json.dumps(table[columns].astype(str).to_numpy().tolist()).encode())
    h.update(extra.encode())
    for name in images:
        pixels = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
        assert pixels is not None, name
        h.update(f"{name}:{pixels.shape}:{pixels.dtype}".encode())
        h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def _cohort_digest(path) -> str:
    df = pd.read_csv(path)
    meta = json.loads((path.parent / "phantom.json").read_text(encoding="utf-8"))
    images = df["image"].tolist()
    columns = ["image", "label", "patient_id", "roi", "p_malignant", "tirads", "tirads_points", "composition",
               "echogenicity", "shape", "margin", "foci", "view"]
    if "mark_mask" in df.columns:
        images += df["mark_mask"].tolist() + df["foci_mask"].tolist()
        columns += ["mark_mask", "foci_mask", "calipers", "marks"]
    return _digest(path.parent, df, images, columns, json.dumps(meta, sort_keys=True))


@pytest.mark.parametrize("name, kwargs", [
    ("cohort", dict(n_patients=4, images_per_patient=(1, 2), size=64, seed=5)),
    ("cohort_marks_96", dict(n_patients=4, images_per_patient=(1, 2), size=96, seed=6, marks=True, marks_bias=0.5)),
    ("cohort_marks_256", dict(n_patients=2, images_per_patient=(1, 1), size=256, seed=11, marks=True)),
])
def test_cohort_pixels_are_pinned(tmp_path, name, kwargs):
    digest = _cohort_digest(generate_cohort(tmp_path / name, **kwargs))
    assert digest == PINNED[name], f"{name}: {digest}"


def test_corpus_pixels_are_pinned(tmp_path):
    path = generate_corpus(tmp_path / "corpus", n_per_class=1, size=64, seed=3, classes=list(ALL_CORPUS_CLASSES))
    df = pd.read_csv(path)
    digest = _digest(path.parent, df, df["image"].tolist(), ["image", "class", "class_index", "modality", "region"])
    assert digest == PINNED["corpus"], f"corpus: {digest}"
