"""Preprocessing in a worker process of a cache build: one OpenCV thread and one :class:`Preprocessor` each."""

from __future__ import annotations

import cv2
import numpy as np

from thyro.data.preprocess.config import PreprocessConfig
from thyro.data.preprocess.pipeline import Preprocessor
from thyro.errors import DataError

_pool_state: dict = {}


def pool_init(cfg_json: dict) -> None:
    """Initialise a worker process: one OpenCV thread, one Preprocessor."""
    cv2.setNumThreads(1)
    _pool_state["pre"] = Preprocessor(PreprocessConfig.model_validate(cfg_json))


def pool_work(task: tuple[int, str, dict | None, int]) -> tuple[int, np.ndarray | None, dict | None, str | None]:
    """Preprocess one ``(row, path, roi, frame)``: ``(row, pixels, geometry dict, error)``.

    Errors come back as text (reported together).
    """
    i, path, roi, frame = task
    try:
        out, geometry = _pool_state["pre"].process_file(path, roi=roi, frame=frame)
        return i, out, geometry.as_dict(), None
    except DataError as exc:
        return i, None, None, str(exc)
    except Exception as exc:  # any decoder failure is reported with its file, not raised mid-build
        return i, None, None, f"{type(exc).__name__}: {exc}"


__all__ = ["pool_init", "pool_work"]
