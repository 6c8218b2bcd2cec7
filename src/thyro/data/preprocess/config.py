"""Preprocessing settings (a study configuration's ``preprocess:`` block) and the version of the algorithm."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from thyro.base import StrictModel, read_yaml
from thyro.data.marks import MarkSettings
from thyro.errors import ConfigError

#: Bumped whenever the algorithm changes in a way that changes output pixels; part of the cache key.
#: 2: scan area from the screen layout (dark deep tissue kept), white marks found and inpainted on
#: the gray image, mark removal on by default.  3: a caliper takes only the stroke along its arms,
#: and its arms must not lie inside bright tissue (echogenic foci are no longer taken for calipers).
#: 4: text rows are also found by glyphs standing on one baseline, and take the words beside them.
PREPROCESS_VERSION = 4

#: The smallest and largest square side an image may be made at (``preprocess.size``, an arm's ``size``).
MIN_SIDE, MAX_SIDE = 8, 4096


class PreprocessConfig(StrictModel):
    """Preprocessing settings (``preprocess:`` block of a study configuration): how a scan becomes the
    model's square uint8 input.  Each field's description is in the configuration reference
    (docs/config-reference.md, generated from these fields)."""

    size: int = Field(224, ge=MIN_SIDE, le=MAX_SIDE, description="output side in pixels (square)")
    remove_frame: bool = Field(True, description="crop to the scan area (the tissue image), dropping borders, "
                                                 "text and scales beside it")
    frame_threshold: int = Field(4, ge=0, le=254, description="gray levels within which a pixel counts as the "
                                                              "screen's background level")
    frame_min_area: float = Field(0.1, ge=0.0, le=1.0, description="if no tissue region covers this fraction of "
                                  "the frame, the whole frame is used (with a warning)")
    roi_crop: bool = Field(False, description="crop to the nodule ROI (the manifest's roi column) grown by "
                                              "roi_margin")
    roi_margin: float = Field(0.15, ge=0.0, le=5.0, description="margin added on each side of the ROI box, as a "
                              "fraction of the ROI's width (left/right) and height (top/bottom)")
    roi_min_size: int = Field(32, ge=1, description="the ROI crop is grown around its centre to at least this many "
                                                    "source pixels per side")
    inpaint_marks: bool = Field(True, description="fill in burned-in marks (calipers, measurement lines, markers) "
                                                  "by inpainting")
    mark_white: bool = Field(True, description="also find white and light-gray marks (not only coloured ones)")
    mark_chroma: int = Field(25, ge=1, le=255, description="pixels whose max(R, G, B) - min(R, G, B) exceeds this "
                             "seed a coloured mark (which grows into its paler JPEG halo)")
    inpaint_radius: int = Field(3, ge=1, le=32, description="radius (pixels) of the inpainting neighbourhood")
    keep_aspect: bool = Field(True, description="keep the aspect ratio and pad to a square (letterbox); false "
                                                "stretches the crop to a square")
    pad_value: int = Field(0, ge=0, le=255, description="gray level of the letterbox padding")

    def cache_fields(self) -> dict:
        """Settings that determine output pixels (all of them), plus the algorithm version."""
        return {"preprocess_version": PREPROCESS_VERSION, **self.model_dump(mode="json")}

    def mark_settings(self) -> MarkSettings:
        return MarkSettings(chroma=self.mark_chroma)


def load_preprocess_config(path: str | os.PathLike | None = None, **overrides) -> PreprocessConfig:
    """Preprocessing settings from a YAML file (a study configuration's ``preprocess:`` block, or a
    file holding that block alone), with keyword overrides (None values are ignored)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path)
        if "preprocess" in loaded:
            data = loaded["preprocess"] or {}
        elif set(loaded) <= set(PreprocessConfig.model_fields):
            data = loaded
        else:
            raise ConfigError(f"{path}: no 'preprocess:' block (and the file is not a preprocessing block itself; "
                              f"allowed keys: {', '.join(PreprocessConfig.model_fields)}).")
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return PreprocessConfig.parse(data, source=str(path) if path else "preprocess settings")


__all__ = ["PREPROCESS_VERSION", "PreprocessConfig", "load_preprocess_config"]
