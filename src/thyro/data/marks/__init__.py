"""Burned-in marks on ultrasound images: find them, and fill them in.

Scanners draw the sonographer's calipers ("+", "x"), dotted measurement lines, text, body-mark
icons, depth scales and focus or orientation markers into the exported pixels.  Calipers and
measurements are drawn more often on suspicious nodules, so a model can learn them instead of the
nodule; they are removed before training and prediction.  What must survive is the tissue,
including its brightest features: echogenic foci and calcifications.

Marks are graphics, and graphics differ from tissue in ways that do not depend on the scanner:

* **Colour** (:func:`colour_mask`): tissue is gray; pixels whose channels differ by more than
  ``chroma`` are coloured marks (green, cyan or yellow calipers and letters, coloured markers),
  with the pale halo JPEG spreads around them.
* **Thin bright strokes** (:func:`white_marks`): white and light-gray graphics are drawn with
  strokes one to three pixels wide, far brighter than the pixels two or three pixels away.  The
  white top-hat of the gray image (the image minus its opening by a 5 x 5 square) keeps exactly
  such structures.  Pixels that are bright (``white`` and above) with a strong top-hat seed a
  *stroke* mask, which grows (morphological reconstruction) into connected pixels of a weaker
  top-hat, completing strokes that JPEG has dimmed.  Speckle in bright tissue makes strokes too,
  so a stroke is a mark only in a shape tissue does not make:

  - ``caliper``: a "+" or "x" (arms of 3 to 6 pixels, with or without a gap at the centre):
    four straight, complete, near-white arms and nothing bright between them.  A line has two
    arms; a focus or a calcification is a blob that fills the space between them; stacked
    near-field interfaces fill it too;
  - ``scale``: a thin vertical line at least 14 pixels long, with what is drawn on it (ticks,
    the focus marker).  Tissue interfaces lie across the beam, and comet-tail artefacts are
    shorter; a bright region that is merely tall is wider than a line;
  - ``icon``: a hairline (at most two pixels wide) curve at least 15 pixels tall (body-mark
    outlines).  Rim calcifications are thicker;
  - ``text``: a row of glyphs 7 to 24 pixels tall, with a vertical stroke (half the row's height),
    or a glyph in thin strokes standing on the row's baseline, at least every one and a half
    heights, and few long horizontal runs (stacked interfaces bridged by speckle have many); and
    the glyphs on the same line within a word space of such a row ("3" of "3 IZQ");
  - ``dotted``: four or more small dots, evenly spaced on a line (measurement lines).

  Everything else bright is tissue: echogenic foci, calcifications and comet tails are blobs or
  short streaks, and are never in the mask.  What is not found (gray icons of low contrast, for
  example) stays in the image; a report of the marks found lets a user check.

Removal is :func:`inpaint` (OpenCV's Telea method): each mark pixel is filled from the tissue
around it, so the image keeps its texture and no black hole is left for a model to learn.
"""

from thyro.data.marks.detect import (
    KINDS,
    WHITE_KINDS,
    MarkSettings,
    colour_mask,
    detect_marks,
    inpaint,
    mark_kinds,
    white_marks,
)
from thyro.data.marks.morphology import tophat as _tophat  # noqa: F401 - the top-hat, for tests and benchmarks

__all__ = ["KINDS", "WHITE_KINDS", "MarkSettings", "colour_mask", "detect_marks", "inpaint", "mark_kinds",
           "white_marks"]
