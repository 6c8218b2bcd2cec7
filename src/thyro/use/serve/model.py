"""The server's calls into the model, in one place: reading an upload, preparing it, scoring, heatmaps.

:class:`Model` is all the :class:`~thyro.use.serve.service.Service` knows of engines and preprocessing;
the shared scoring path (``thyro.use.scoring``) replaces its body without the service changing.  Uploads
are read from memory: :class:`Upload` is the readers' :class:`~thyro.data.readers.Source` over the bytes
received, named by the client's file name.
"""

from __future__ import annotations

import numpy as np

from thyro.data.readers import Source, load_image
from thyro.use.bundle import ModelPackage
from thyro.use.engines import make_engine
from thyro.use.explain import heatmaps
from thyro.use.inputs import InputItem, Prepared, image_info, prepare_item
from thyro.use.serve.settings import ServeSettings


class Upload(Source):
    """An upload's bytes for the readers, shown by its name: messages about it name the client's file."""

    def __str__(self) -> str:
        return self.name

    @classmethod
    def of_bytes(cls, data: bytes | memoryview, filename: str | None) -> Upload:
        return cls(filename or "upload", data=data)


class Model:
    """The package's engine and preprocessing, as the server calls them.

    Parameters
    ----------
    package : ModelPackage
    settings : ServeSettings
        ``engine``, ``onnx_path``, ``model_threads`` and ``method`` are used.
    """

    def __init__(self, package: ModelPackage, settings: ServeSettings):
        self.engine = make_engine(package, settings.engine, settings.onnx_path, spin=False,
                                  threads=settings.model_threads)
        self.models = getattr(self.engine, "models", None)  # torch only: heatmaps
        self.pre = package.preprocessor()
        self.size = package.image_size
        self.method = settings.method

    @property
    def has_heatmaps(self) -> bool:
        return self.models is not None

    def pixels(self, upload: Upload) -> int | None:
        """The upload's frame size in pixels, from its header (None when the header cannot be read)."""
        info = image_info(upload)
        return info.size[0] * info.size[1] if info is not None else None

    def read(self, upload: Upload) -> np.ndarray:
        """The upload's pixels as read (whole frame, gray)."""
        return np.asarray(load_image(upload, us_region=False).pixels)

    def prepare(self, upload: Upload, roi: dict | None, frame: bool) -> Prepared:
        """The model's input for the upload (with ``frame``, its full frame in RGB too)."""
        return prepare_item(self.pre, InputItem(upload, upload.name, roi), self.size, frame=frame)  # type: ignore[arg-type]

    def score(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a ``(B, S, S)`` uint8 batch."""
        return self.engine(batch)

    def heatmaps(self, batch: np.ndarray) -> np.ndarray:
        """Heatmaps of a ``(B, S, S)`` uint8 batch (torch engine only)."""
        return heatmaps(self.models, batch, self.method)
