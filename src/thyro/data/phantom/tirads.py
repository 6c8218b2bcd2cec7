"""The TI-RADS model of the thyroid phantom: feature frequencies, points, levels and malignancy.

A nodule's visible features follow the ACR TI-RADS lexicon (Tessler et al., J Am Coll Radiol 2017):

=================  ==================================================================  =========
feature            categories (points)                                                 rendering
=================  ==================================================================  =========
composition        cystic 0, spongiform 0, mixed cystic/solid 1, solid 2               anechoic spaces
echogenicity       anechoic 0, hyperechoic 1, isoechoic 1, hypoechoic 2, very hypo 3   mean echo level
shape              wider-than-tall 0, taller-than-wide 3                               axis ratio
margin             smooth 0, ill-defined 0, lobulated 2, irregular 2, extrathyroidal 3 outline, edge width
echogenic foci     none/comet-tail 0, macrocalcifications 1, peripheral rim 2,          bright spots,
                   punctate 3                                                          acoustic shadows
=================  ==================================================================  =========

As in ACR TI-RADS, a spongiform nodule scores 0 in total and a cystic nodule only scores its foci
and margin points are not given (they are smooth).  The TI-RADS level follows from the points
(TR1: 0-1, TR2: 2, TR3: 3, TR4: 4-6, TR5: 7+).  Malignancy is drawn per patient from the known
probability ``p_malignant = sigmoid(MALIGNANCY_INTERCEPT + MALIGNANCY_SLOPE * points)``
(:func:`malignancy_probability`).
"""

from __future__ import annotations

import numpy as np


COMPOSITION_POINTS = {"cystic": 0, "spongiform": 0, "mixed": 1, "solid": 2}
ECHOGENICITY_POINTS = {"anechoic": 0, "hyperechoic": 1, "isoechoic": 1, "hypoechoic": 2, "very hypoechoic": 3}
SHAPE_POINTS = {"wider-than-tall": 0, "taller-than-wide": 3}
MARGIN_POINTS = {"smooth": 0, "ill-defined": 0, "lobulated": 2, "irregular": 2, "extrathyroidal": 3}
FOCI_POINTS = {"none": 0, "comet-tail": 0, "macrocalcifications": 1, "peripheral": 2, "punctate": 3}

#: Malignancy model: p = sigmoid(INTERCEPT + SLOPE * TI-RADS points).
MALIGNANCY_INTERCEPT = -5.0
MALIGNANCY_SLOPE = 0.8


def tirads_points(features: dict) -> int:
    """ACR TI-RADS points of a feature dict (keys composition, echogenicity, shape, margin, foci)."""
    if features["composition"] == "spongiform":
        return 0
    return (COMPOSITION_POINTS[features["composition"]] + ECHOGENICITY_POINTS[features["echogenicity"]]
            + SHAPE_POINTS[features["shape"]] + MARGIN_POINTS[features["margin"]] + FOCI_POINTS[features["foci"]])


def tirads_level(points: int) -> int:
    """ACR TI-RADS level (1-5) from points."""
    return 1 if points <= 1 else 2 if points == 2 else 3 if points == 3 else 4 if points <= 6 else 5


def malignancy_probability(points: int | np.ndarray) -> float | np.ndarray:
    """Known probability of malignancy given TI-RADS points (logistic model)."""
    return 1.0 / (1.0 + np.exp(-(MALIGNANCY_INTERCEPT + MALIGNANCY_SLOPE * np.asarray(points, dtype=float))))


def sample_features(rng: np.random.Generator) -> dict:
    """Draw one nodule's TI-RADS features (frequencies of a biopsied cohort, enriched in suspicious ones)."""
    comp = str(rng.choice(["cystic", "spongiform", "mixed", "solid"], p=[0.07, 0.08, 0.25, 0.60]))
    if comp == "cystic":
        echo = "anechoic"
    elif comp == "spongiform":
        echo = str(rng.choice(["isoechoic", "hyperechoic"], p=[0.7, 0.3]))
    else:
        echo = str(rng.choice(["hyperechoic", "isoechoic", "hypoechoic", "very hypoechoic"],
                              p=[0.10, 0.30, 0.42, 0.18]))
    if comp in ("cystic", "spongiform"):
        shape = "taller-than-wide" if rng.random() < 0.05 else "wider-than-tall"
        margin = str(rng.choice(["smooth", "ill-defined"], p=[0.8, 0.2]))
        foci = str(rng.choice(["none", "comet-tail"], p=[0.7, 0.3]))
    else:
        shape = "taller-than-wide" if rng.random() < 0.22 else "wider-than-tall"
        margin = str(rng.choice(list(MARGIN_POINTS), p=[0.42, 0.20, 0.14, 0.16, 0.08]))
        foci = str(rng.choice(["none", "macrocalcifications", "peripheral", "punctate", "comet-tail"],
                              p=[0.45, 0.15, 0.08, 0.25, 0.07]))
        if foci == "comet-tail" and comp == "solid":
            foci = "none"
    return {"composition": comp, "echogenicity": echo, "shape": shape, "margin": margin, "foci": foci}
