"""Heatmaps (Grad-CAM, Grad-CAM++) of a one-logit model, on the original image and on the model's input.

* :mod:`~thyro.use.explain.gradcam`: the heatmaps of a batch, one forward and backward pass per fold model
  (:func:`heatmaps`), with the logit itself as the target (:class:`LogitTarget`);
* :mod:`~thyro.use.explain.figures`: the pictures (the heatmap put back on the original image inside the
  crop box, on the model's input inside the image only, a colour bar, the figure with its caption);
* :mod:`~thyro.use.explain.driver`: ``thyro explain`` (:func:`explain`), batched through a
  :class:`~thyro.use.scoring.Scorer`;
* :mod:`~thyro.use.explain.outcomes`: test cases by outcome, each with its heatmap (:func:`montage`).
"""

from thyro.use.explain.driver import EXPLAIN_FRAMES, INDEX_COLUMNS, caption, explain
from thyro.use.explain.figures import (
                                       caption_band,
                                       colour_bar,
                                       colour_map,
                                       explanation_figure,
                                       image_region,
                                       on_original,
                                       overlay,
                                       overlay_input,
                                       save_png,
                                       with_colour_bar,
                                       within_image,
)
from thyro.use.explain.gradcam import METHODS, LogitTarget, check_method, find_target_layer, heatmaps
from thyro.use.explain.outcomes import montage

__all__ = ["EXPLAIN_FRAMES", "INDEX_COLUMNS", "METHODS", "LogitTarget", "caption", "caption_band", "check_method",
           "colour_bar", "colour_map", "explain", "explanation_figure", "find_target_layer", "heatmaps",
           "image_region", "montage", "on_original", "overlay", "overlay_input", "save_png", "with_colour_bar",
           "within_image"]
