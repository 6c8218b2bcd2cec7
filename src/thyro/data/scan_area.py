"""The scan area of an ultrasound frame: where the tissue image is, found from the screen's layout.

A scanner screen is a tissue image (a rectangle for linear probes, a fan for convex and phased
ones) on a uniform background that holds the user interface: settings text, depth scales,
gray-scale bars, body-mark icons, logos.  Exports differ: some keep the whole screen (black border
with text around the image), some are cropped by the scanner or by hand to the image itself (no
border at all, the depth scale drawn over the tissue), and the deep part of the field of view is
often as dark as the background.  The detector therefore does not look for "a black border"; it
decides, side by side, whether anything beyond the tissue is user interface, and cuts only then.

Method (classical: a few OpenCV passes and 1-D profiles, a few milliseconds per 560 x 360 frame):

1. **Background level**: the most frequent gray level among the dark levels (0..47) of the frame:
   the UI background (0 on most scanners, 1-3 on some JPEG exports).
2. **Occupancy**: a pixel is *content* when it differs from the background by more than
   ``tolerance``.  The fraction of content pixels in a window of about 2.5% of the image side is
   the occupancy.  Tissue, even dark tissue above the scanner's noise floor, has occupancy near 1
   (speckle fills every pixel); text, scale ticks, dots and icons are thin strokes on background,
   with occupancy well under 1/2.
3. **Tissue core**: occupancy >= 1/2, opened with a square of about 3% of the side, which removes
   whatever is thinner (text, ticks, gray-scale bars, icons drawn in lines).  The core is the
   largest connected region, merged with large regions beside it on the same rows (dual views
   split by a dark line).  A core under ``min_area`` of the frame means the layout was not
   understood: the whole frame is used, with a warning.
4. **Each side of the core's box** is kept to the image edge unless the tissue image has a border
   there (:func:`_side_end`).  From a few lines inside the box, each position's run of content is
   followed outward to where it stops.  A scanner's image area ends on one smooth line: straight,
   slanted (steered or trapezoid images), a step where dual views of different depths meet, an
   arc (convex probes); so the stop lines of neighbouring positions agree to within a few pixels
   nearly everywhere, and the border is placed at the outermost of them (a few ticks or labels
   touching the edge, off the line, are left out).  Tissue fading into the dark (deep tissue, posterior shadowing) stops at a different
   depth in every column: no border, and the side is kept to the image edge.  Two layout rules
   complete it: a core reaching both lateral edges of the frame (within 3%) is an export cropped
   to the image area, whose field of view runs to the bottom edge however dark the deep tissue
   (a scanner's frame puts its text and scales beside the image, not only below it); and a core
   reaching an edge has no border on that side.

   So tissue is never cut for being dark; a side is cut only where the image area visibly ends.
   The cost is the other way round: a border that is not a clean line (a text band glued to the
   image all along it, say) is kept, with its UI inside the crop (the mark detector then removes
   what it recognises).

The DICOM Sequence of Ultrasound Regions (0018,6011), when a file has one, says where the tissue
image is; :mod:`thyro.data.readers` crops to it before any of this and the detector is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import median_filter

Box = tuple[int, int, int, int]

#: Scan-area methods a :class:`ScanArea` can report.
METHODS = ("layout", "whole-image", "dicom-region", "off")


@dataclass(frozen=True)
class ScanArea:
    """Where the tissue image lies in a frame.

    Attributes
    ----------
    box : (x0, y0, x1, y1)
        Exclusive ends, in the pixels handed to the detector.
    method : str
        ``"layout"`` (found by :func:`find_scan_area`), ``"whole-image"`` (no border found, or the
        layout was not understood: see ``warning``), ``"dicom-region"`` (the file's ultrasound
        region) or ``"off"`` (detection switched off).
    warning : str
        Empty, or why the whole image was used although a border may be present.
    """

    box: Box
    method: str = "layout"
    warning: str = ""


def background_level(gray: np.ndarray) -> int:
    """The UI background's gray level: the most frequent level among 0..47 (0 when none is dark)."""
    hist = cv2.calcHist([gray], [0], None, [48], [0, 48]).ravel()
    return int(np.argmax(hist)) if hist.sum() > 0 else 0


def _odd(v: float, lo: int = 3) -> int:
    return max(lo, int(round(v)) | 1)


def _core_box(core: np.ndarray, min_area: float) -> Box | None:
    """The largest region of ``core``, merged with large regions beside it on the same rows."""
    h, w = core.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4, ltype=cv2.CV_16U)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    if stats[best, cv2.CC_STAT_AREA] < min_area * h * w:
        return None
    members = [best]
    x0, y0 = int(stats[best, 0]), int(stats[best, 1])
    x1, y1 = x0 + int(stats[best, 2]), y0 + int(stats[best, 3])
    changed = True
    while changed:  # dual views: two images side by side split by a thin dark line
        changed = False
        for j in range(1, n):
            if j in members or stats[j, cv2.CC_STAT_AREA] < 0.2 * stats[best, cv2.CC_STAT_AREA]:
                continue
            jx0, jy0, jw, jh = (int(v) for v in stats[j, :4])
            overlap = min(y1, jy0 + jh) - max(y0, jy0)
            gap = max(jx0 - x1, x0 - (jx0 + jw))
            if overlap >= 0.5 * min(jh, y1 - y0) and gap <= 0.05 * w:
                members.append(j)
                x0, y0, x1, y1 = min(x0, jx0), min(y0, jy0), max(x1, jx0 + jw), max(y1, jy0 + jh)
                changed = True
    return x0, y0, x1, y1


def _run_ends(lines: np.ndarray, start: int, depth: int) -> np.ndarray:
    """Per position along a side, where the content run through line ``start`` ends (-1: no run).

    ``lines`` is a boolean content map with one line per row, ordered from the core outward.  The
    run ends before the first ``depth`` consecutive lines without content.
    """
    n, m = lines.shape
    ends = np.full(m, -1, dtype=np.int64)
    alive = lines[start].copy()
    ends[alive] = n
    empty_run = np.zeros(m, dtype=np.int64)
    last = np.full(m, start, dtype=np.int64)
    for i in range(start + 1, n):
        row = lines[i]
        empty_run = np.where(row, 0, empty_run + 1)
        last = np.where(row & alive, i, last)
        stopped = alive & (empty_run >= depth)
        ends[stopped] = last[stopped] + 1
        alive &= ~stopped
        if not alive.any():
            break
    return ends


def _side_end(lines: np.ndarray, end: int, band: int, depth: int = 2) -> tuple[int, float]:
    """Where the scan area ends on one side, and how clearly (an exclusive index into ``lines``).

    ``lines`` is the boolean content map across the core, ordered from the core outward (flip and
    transpose it for the top and left sides); ``end`` is the core box's exclusive end.  From
    ``band`` lines inside the box, each position's content run is followed outward to where it
    stops (:func:`_run_ends`).  At the border of a scanner's image area the runs stop on one
    smooth line: straight, slanted (steered or trapezoid images), a step where dual views of
    different depths meet, or an arc (convex probes): at 80% of the positions or more, the stop
    line lies within 3 pixels of the local median (over 15 neighbours).  Tissue fading into the
    dark (deep tissue, shadowing) stops at a different depth in every position.  A border is placed
    at the outermost stop among the positions on the line, which leaves out a few ticks or labels
    touching the edge; without a border the scan area runs to the image edge, so dark tissue is
    never cut.  Returns ``(index, smoothness)``.
    """
    n = lines.shape[0]
    if end >= n:
        return n, 1.0
    start = max(0, end - band)
    ends = _run_ends(lines, start, depth)
    defined = ends[(ends >= 0) & (ends < n)]
    if ends.size == 0 or (ends >= 0).mean() < 0.05:
        return max(end, start), 1.0  # nothing reaches the edge: it is where the core ends
    if defined.size < 0.5 * (ends >= 0).sum():
        return n, 0.0  # most runs reach the image edge
    seq = ends[ends >= 0].astype(np.float32)
    local = median_filter(seq, size=min(15, seq.size), mode="nearest")
    on_line = (np.abs(seq - local) <= 3) & (seq < n)
    smooth = float(on_line.mean())
    if smooth < 0.8:
        return n, smooth
    # the outermost point of the border line (a slanted side, the deeper of two views, the bottom
    # of an arc) among stretches of it at least a tenth of the side long: a tick, a dot or a label
    # touching the edge makes a short stretch of its own
    long_enough = np.zeros(seq.size, dtype=bool)
    edges = np.flatnonzero(np.diff(np.r_[0, np.abs(np.diff(seq)) <= 1, 0]))
    for a, b in zip(edges[::2], edges[1::2] + 1):  # runs of neighbours within a pixel of each other
        if b - a >= max(5, seq.size // 10):
            long_enough[a:b] = True
    pick = on_line & long_enough
    end = int(np.ceil(seq[pick].max() if pick.any() else np.percentile(seq[on_line], 80)))
    if end < n and float(lines[end].mean()) > 0.05:
        end += 1  # the border's line, blurred by JPEG, still holds some of the edge
    return end, smooth


def find_scan_area(gray: np.ndarray, tolerance: int = 4, min_area: float = 0.1) -> ScanArea:
    """The scan area of a gray uint8 frame, from its layout (see the module docstring).

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)
    tolerance : int
        Gray levels above (or below) the background level that still count as background.
    min_area : float
        The tissue core must cover at least this fraction of the frame, else the whole frame is
        used with a warning.

    Returns
    -------
    ScanArea
    """
    h, w = gray.shape
    whole: Box = (0, 0, w, h)
    side = min(h, w)
    bg = background_level(gray)
    # uint8 throughout (0/255 maps, a uint8 box filter: its mean rounds to 128 and above exactly
    # when the occupancy is 1/2 or more), so a large frame costs a few bytes per pixel
    content = cv2.absdiff(gray, np.full_like(gray, bg))
    cv2.threshold(content, tolerance, 255, cv2.THRESH_BINARY, dst=content)
    if cv2.countNonZero(content) > 0.985 * h * w:
        return ScanArea(whole, "whole-image")  # no background anywhere: the frame is all tissue
    k_occ = _odd(side * 0.025)
    core = cv2.blur(content, (k_occ, k_occ), borderType=cv2.BORDER_REPLICATE)
    cv2.threshold(core, 127, 1, cv2.THRESH_BINARY, dst=core)
    k_open = _odd(side * 0.03)
    cv2.morphologyEx(core, cv2.MORPH_OPEN, np.ones((k_open, k_open), np.uint8), dst=core)
    box = _core_box(core, min_area)
    del core
    if box is None:
        return ScanArea(whole, "whole-image",
                        f"no tissue region covering {min_area:.0%} of the frame was found "
                        f"(background level {bg}); the whole frame is used")
    x0, y0, x1, y1 = box
    band = max(3, int(round(side * 0.015)))
    cv2.threshold(content, 0, 1, cv2.THRESH_BINARY, dst=content)
    mask = content.view(bool)  # 0/1 bytes: a boolean view, no copy
    top = h - _side_end(mask[::-1, x0:x1], h - y0, band)[0]
    right, _ = _side_end(mask[y0:y1].T, x1, band)
    left = w - _side_end(mask[y0:y1, ::-1].T, w - x0, band)[0]
    if left <= 0.03 * w and right >= 0.97 * w:
        # tissue to both lateral edges: the export is cropped to the image area, whose field of
        # view runs to the bottom edge however dark the deep tissue (a scanner's frame puts text
        # and scales beside the image, not only below it)
        bottom = h
    else:
        bottom, _ = _side_end(mask[:, x0:x1], y1, band)
    return ScanArea((int(left), int(top), int(right), int(bottom)), "layout")
