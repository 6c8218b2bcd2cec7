"""Ultrasound preprocessing: scan area, mark removal, ROI crop, square resize.

One :class:`Preprocessor` turns a decoded image into the square, one-channel uint8 array the cache
stores and the model reads.  Training (through :mod:`thyro.data.cache`) and prediction on new images
both call :meth:`Preprocessor.from_file`, so a model always sees exactly the preprocessing it was
trained with.  :meth:`Preprocessor.process` also returns the :class:`Geometry` of what it did (scan
area, crop box, scale, padding, share of marks), so that a heatmap on the model's input can be put
back on the original pixels and a report can say how much of each frame was kept.

The steps, in order (each one can be switched off in :class:`PreprocessConfig`):

1. Grayscale (always): ITU-R 601 luma, as Pillow's ``convert("L")`` and OpenCV's ``RGB2GRAY``.
2. ``remove_frame``: the scan area (the tissue image) is found from the screen's layout by
   :func:`thyro.data.scan_area.find_scan_area`: borders, text and scales beside the image are cut,
   dark deep tissue is kept to the bottom of the field of view, and the whole frame is used, with a
   warning, when the layout is not understood.  A DICOM file's ultrasound region (0018,6011) is
   the scan area when the file has one (the reader crops to it).
3. ``roi_crop``: crop to the nodule ROI's bounding box (from the manifest's polygons or box) grown by
   ``roi_margin`` of the ROI's width/height on each side, kept inside the scan area.  Images without
   an ROI keep the scan-area crop.
4. ``inpaint_marks``: burned-in marks inside the crop (coloured marks, and with ``mark_white`` white
   calipers, dotted lines, scales and hairline icons) are found by :mod:`thyro.data.marks` and filled
   in with OpenCV's Telea inpainting; echogenic foci and calcifications are kept.  Marks are looked
   for in the crop and a few pixels around it, so the fill draws on the tissue beside the crop too.
5. Resize to ``size`` x ``size``: with ``keep_aspect`` the longer side is scaled to ``size`` and the
   shorter one padded (centred) with ``pad_value``; otherwise the crop is stretched.  Downscaling
   uses area averaging, upscaling bilinear interpolation.
"""

from thyro.data.preprocess.config import PREPROCESS_VERSION, PreprocessConfig, load_preprocess_config
from thyro.data.preprocess.geometry import Box, Geometry, resize_square
from thyro.data.preprocess.pipeline import MARK_CONTEXT, Preprocessor, read_image, read_pixels
from thyro.data.preprocess.steps import find_sector, inpaint_marks, mark_mask, roi_box, to_gray

__all__ = ["MARK_CONTEXT", "PREPROCESS_VERSION", "Box", "Geometry", "PreprocessConfig", "Preprocessor", "find_sector",
           "inpaint_marks", "load_preprocess_config", "mark_mask", "read_image", "read_pixels", "resize_square",
           "roi_box", "to_gray"]
