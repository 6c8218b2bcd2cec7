"""Synthetic ultrasound: a thyroid-nodule phantom cohort and a multi-class pretraining corpus.

Thyroid phantom (:func:`generate_cohort`): each synthetic patient has one nodule with ACR TI-RADS
features and a label drawn from the known probability of malignancy given them, seen in several
B-mode-like views framed like a scanner's screen, optionally with burned-in marks drawn at known
pixels.  Corpus (:func:`generate_corpus`): radiology, thyroid-nodule-appearance and non-medical
classes in RadImageNet's layout, for pretraining a small backbone.

Modules, each one thing:

* :mod:`.tirads`: the TI-RADS model (feature frequencies, points, levels, malignancy);
* :mod:`.imaging`: speckle, log compression, attenuation, smooth random fields;
* :mod:`.lesion`: lesion outlines, content, echogenic foci and acoustic shadows;
* :mod:`.anatomy`: the neck with its nodule, imaged and framed like a scanner screen;
* :mod:`.marks`: burned-in marks (calipers, measurement lines, a label, a depth scale);
* :mod:`.cohort`: the cohort writer (images, manifest, ``phantom.json``) and :func:`best_auroc`;
* :mod:`.radiology`: the corpus's ultrasound, CT and MR classes;
* :mod:`.corpus`: the appearance and non-medical classes and the corpus writer (``corpus.csv``).
"""

from thyro.data.phantom.anatomy import (
    FOCI_LEVEL,
    Frame,
    ViewRender,
    render_thyroid_view,
    view_foci_mask,
)
from thyro.data.phantom.cohort import best_auroc, generate_cohort
from thyro.data.phantom.corpus import (
    ALL_CORPUS_CLASSES,
    APPEARANCE_CLASSES,
    APPEARANCE_MARGIN,
    GENERIC_CLASSES,
    NEUTRAL_FEATURES,
    generate_corpus,
    render_appearance,
    render_corpus_image,
    render_generic,
)
from thyro.data.phantom.imaging import attenuate, bmode, smooth_noise, speckle
from thyro.data.phantom.lesion import (
    Lesion,
    Placement,
    foci_map,
    lesion_polygon,
    make_outline,
    paint_lesion,
    thyroid_nodule,
)
from thyro.data.phantom.marks import MARK_COLOURS, draw_marks, text_bitmap
from thyro.data.phantom.radiology import CORPUS_CLASSES
from thyro.data.phantom.tirads import (
    COMPOSITION_POINTS,
    ECHOGENICITY_POINTS,
    FOCI_POINTS,
    MALIGNANCY_INTERCEPT,
    MALIGNANCY_SLOPE,
    MARGIN_POINTS,
    SHAPE_POINTS,
    malignancy_probability,
    sample_features,
    tirads_level,
    tirads_points,
)

__all__ = [
    "ALL_CORPUS_CLASSES", "APPEARANCE_CLASSES", "APPEARANCE_MARGIN", "COMPOSITION_POINTS", "CORPUS_CLASSES",
    "ECHOGENICITY_POINTS", "FOCI_LEVEL", "FOCI_POINTS", "GENERIC_CLASSES", "MALIGNANCY_INTERCEPT",
    "MALIGNANCY_SLOPE", "MARGIN_POINTS", "MARK_COLOURS", "NEUTRAL_FEATURES", "SHAPE_POINTS", "Frame", "Lesion",
    "Placement", "ViewRender", "attenuate", "best_auroc", "bmode", "draw_marks", "foci_map", "generate_cohort",
    "generate_corpus", "lesion_polygon", "make_outline", "malignancy_probability", "paint_lesion",
    "render_appearance", "render_corpus_image", "render_generic", "render_thyroid_view", "sample_features",
    "smooth_noise", "speckle", "text_bitmap", "thyroid_nodule", "tirads_level", "tirads_points", "view_foci_mask",
]
