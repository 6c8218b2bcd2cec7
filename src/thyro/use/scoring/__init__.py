"""One scoring path: every driver (``thyro predict``, ``thyro.load(...).predict``, ``thyro explain``, the
shortcut audit, the web app) goes from an input to a probability through a :class:`Scorer`.

    scorer = Scorer("model/")                           # the package, its preprocessing, the engine
    prepared = scorer.prepare(upload_bytes, name="scan.dcm", roi=None)
    if isinstance(prepared, Failure):                   # an input problem, named: a row, an HTTP 400, ...
        print(prepared.error)
    else:
        p = scorer.score([prepared])[0]                 # probabilities of a batch
        cam = scorer.explain([prepared])[0]             # Grad-CAM heatmaps of a batch (torch engine)
    for row in scorer.rows(collect_inputs(["scans/"]), batch_size=16, frames="first"):
        ...                                             # rows in input order, scored a batch at a time

Preparation (:mod:`~thyro.use.scoring.prepare`) takes a path, bytes or a binary file object (nothing is
written to disk), a PIL image or a numpy array, with an optional ROI and frame, and gives a
:class:`Prepared` image (the model's input, a warning, its geometry, and the full frame when a heatmap will
be drawn on it) or a :class:`Failure` naming the input and why.  Input problems (thyro's errors, an
``OSError`` reading the input) are failures; any other exception is a bug and is raised.
"""

from thyro.use.scoring.items import (
                                     FRAME_POLICIES,
                                     METHODS,
                                     MIN_SIDE,
                                     InputItem,
                                     check_frames,
                                     check_method,
                                     frame_items,
                                     image_info,
)
from thyro.use.scoring.pixels import as_pixels, check_pixel_limit, is_pixels
from thyro.use.scoring.prepare import INPUT_ERRORS, Failure, Prepared, error_text, prepare, prepare_item
from thyro.use.scoring.rows import PredictionRow
from thyro.use.scoring.scorer import Batch, Scorer, check_batch_size

__all__ = ["FRAME_POLICIES", "INPUT_ERRORS", "METHODS", "MIN_SIDE", "Batch", "Failure", "InputItem", "PredictionRow",
           "Prepared", "Scorer", "as_pixels", "check_batch_size", "check_frames", "check_method", "check_pixel_limit",
           "error_text", "frame_items", "image_info", "is_pixels", "prepare", "prepare_item"]
