"""The engines that score preprocessed images, uint8 ``(B, S, S)`` -> probability ``(B,)``: ``torch`` (the
fold models, eager) and ``onnx`` (the graph written by ``thyro export``, run with onnxruntime; torch is not
imported on that path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from thyro.errors import ModelPackageError, ThyroError
from thyro.optional import require
from thyro.use.package import ModelPackage

#: The engines :func:`make_engine` builds.
ENGINES = ("torch", "onnx")


class TorchEngine:
    """The fold models in PyTorch eager mode: :class:`thyro.models.inference.Ensemble`, the same
    inference training's validation and the study's predictions use (flip test-time augmentation and
    the mean of the models' probabilities)."""

    name = "torch"

    def __init__(self, models: list, tta_flip: bool = False):
        import torch  # lazy: the onnx engine's path never imports torch

        from thyro.models.inference import Ensemble, to_input  # lazy: torch, as above

        self.models = models
        self.tta_flip = bool(tta_flip)
        self.ensemble = Ensemble(models, self.tta_flip).eval()
        self._torch = torch
        self._to_input = to_input

    @classmethod
    def from_package(cls, package: ModelPackage) -> TorchEngine:
        return cls(package.load_torch_models(), tta_flip=package.tta_flip)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = self._to_input(self._torch.from_numpy(np.ascontiguousarray(batch)))
        with self._torch.inference_mode():
            probs, _ = self.ensemble(x)
        return probs.numpy().astype(float)


class OnnxEngine:
    """The exported ONNX graph (fold ensemble inside) run with onnxruntime on the CPU."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, spin: bool = True):
        ort = require("onnxruntime", purpose="engine='onnx'")

        path = Path(path)
        if not path.is_file():
            raise ModelPackageError(f"{path}: ONNX model not found; export the package with `thyro export MODEL_DIR` "
                                    "(thyro.use.export.export_onnx), which writes MODEL_DIR/model.onnx, where "
                                    "engine='onnx' looks by default, or pass the exported file as onnx_path.")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:  # idle worker threads sleep instead of spinning: CPU for the rest of a server's work
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def check_matches(self, package: ModelPackage, path: Path) -> None:
        """Refuse an ONNX file exported from other model files or for another input size."""
        meta = self.metadata
        expected = [m.get("sha256") for m in package.meta["models"]]
        if "models_sha256" in meta and json.loads(meta["models_sha256"]) != expected:
            raise ModelPackageError(f"{path}: exported from other model files than {package.root}'s; "
                                    f"export again with `thyro export {package.root}`.")
        if "tta_flip" in meta and (meta["tta_flip"] == "true") != package.tta_flip:
            raise ModelPackageError(f"{path}: flip test-time augmentation {meta['tta_flip']} differs from the "
                                    f"package's; export again with `thyro export {package.root}`.")
        if "image_size" in meta and int(meta["image_size"]) != package.image_size:
            raise ModelPackageError(f"{path}: input size {meta['image_size']} px, but the package's preprocessing "
                                    f"gives {package.image_size} px; export again with `thyro export {package.root}`.")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = (np.ascontiguousarray(batch, dtype=np.float32) / np.float32(255.0))[:, None]
        return self.session.run(["probability"], {self.input_name: x})[0].astype(float).reshape(-1)


def make_engine(package: ModelPackage, engine: str = "torch", onnx_path: str | os.PathLike | None = None,
                spin: bool = True, threads: int | None = None):
    """The engine for ``engine``; ``spin=False`` lets idle ONNX Runtime threads sleep (for a server, whose
    other threads decode images between model calls); ``threads`` sets the model's intra-op threads (for
    PyTorch process-wide: ``torch.set_num_threads``)."""
    if engine == "torch":
        if threads:
            import torch  # lazy: the onnx engine's path never imports torch

            torch.set_num_threads(int(threads))
        return TorchEngine.from_package(package)
    if engine == "onnx":
        path = Path(onnx_path or package.onnx_path)
        eng = OnnxEngine(path, threads=threads, spin=spin)
        eng.check_matches(package, path)
        return eng
    raise ThyroError(f"engine={engine!r}: choose 'torch' or 'onnx'.")

