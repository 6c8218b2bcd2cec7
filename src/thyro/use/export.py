"""Export a model package to ONNX, verified against PyTorch.

The fold ensemble is exported as **one graph**: every fold model (each with its input adapter)
reads the same input, and the graph averages their probabilities, so a consumer gets exactly the
package's prediction from one file.  The graph:

- input ``image``: float32 (B, 1, S, S), values in [0, 1] (the preprocessed uint8 image / 255);
  the batch dimension is dynamic;
- output ``probability``: float32 (B,), the mean of the fold models' sigmoid(logit);
- output ``fold_logits``: float32 (B, K), each fold model's logit (averaged with the horizontal
  flip's when the study used flip test-time augmentation, as the package records in ``tta_flip``).

The model's metadata (``metadata_props``) carries the package format version, the image size, the
preprocessing settings and the operating points, so the file describes itself.

The TorchScript-based exporter is used (``dynamo=False``): the torch.export-based one needs
``onnxscript``, which thyro does not require; opset 17 is the default.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from thyro.errors import ModelPackageError
from thyro.fileio import atomic_path
from thyro.models.inference import Ensemble
from thyro.optional import require
from thyro.use.package import FORMAT_VERSION, ModelPackage, load_package

DEFAULT_OPSET = 17
TOLERANCE = 1e-4


def sample_inputs(size: int, seed: int = 0) -> list[np.ndarray]:
    """Verification inputs: batches of 1 and 3 (to exercise the dynamic batch) of noise and flat images."""
    rng = np.random.default_rng(seed)
    noise = rng.random((3, 1, size, size), dtype=np.float32)
    flat = np.full((1, 1, size, size), 0.5, dtype=np.float32)
    return [noise[:1], noise, flat]


def verify(onnx_path: str | os.PathLike, module, inputs: list[np.ndarray]) -> float:
    """Largest difference between onnxruntime and PyTorch over the inputs (both outputs): absolute where
    PyTorch's value is within [-1, 1] (every probability), relative beyond it.  A fold's logit can be large
    (a linear probe's head on an unusual image gives 60 or more), and float32 round-off grows with it: at 64,
    one unit in the last place is about 4e-6, so an absolute bound meant for probabilities would refuse a
    faithful graph."""
    ort = require("onnxruntime", purpose="checking the ONNX export")

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        got = session.run(["probability", "fold_logits"], {"image": x})
        with torch.inference_mode():
            ref = [t.numpy() for t in module(torch.from_numpy(x))]
        for g, r in zip(got, ref):
            if g.shape != r.shape:
                raise ModelPackageError(f"ONNX output shape {g.shape} differs from PyTorch's {r.shape}.")
            want = r.astype(np.float64)
            scale = np.maximum(1.0, np.abs(want))
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - want) / scale, initial=0.0)))
    return worst


def export_onnx(model_dir: str | os.PathLike | ModelPackage, out: str | os.PathLike | None = None, *,
                opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE) -> dict:
    """Write the package's fold ensemble as one ONNX graph and check it against PyTorch.

    Parameters
    ----------
    model_dir : the model package
    out : the ONNX file (default ``MODEL_DIR/model.onnx``, where ``thyro predict --engine onnx`` looks)
    opset : ONNX opset version
    tolerance : the largest allowed difference from PyTorch on the sample inputs (absolute for the
        probabilities, relative for logits beyond +-1: :func:`verify`)

    Returns
    -------
    dict
        ``path``, ``opset``, ``max_diff`` (what :func:`verify` found; ``max_abs_diff`` is the same number under
        its earlier name), ``n_models``, ``image_size``.

    Raises
    ------
    ModelPackageError
        When the difference exceeds ``tolerance`` (the file is not written then).
    """
    onnx = require("onnx", "onnxruntime", purpose="thyro export")
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    out = Path(out) if out else package.onnx_path
    size = package.image_size
    module = Ensemble(package.load_torch_models(), package.tta_flip).eval()  # the inference predict and serve run
    example = torch.rand(2, 1, size, size)
    with atomic_path(out, suffix=".onnx") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=["probability", "fold_logits"],
                              dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"},
                                            "fold_logits": {0: "batch"}})
        proto = onnx.load(str(tmp))
        meta = {
            "thyro_format_version": str(FORMAT_VERSION),
            "image_size": str(size),
            "input": "image: float32 (batch, 1, S, S) in [0, 1] = preprocessed uint8 / 255",
            "outputs": "probability: mean of fold sigmoid(logit); fold_logits: (batch, K)",
            "preprocess": json.dumps(package.preprocess, default=str),
            "operating_points": json.dumps(package.meta.get("operating_points"), default=str),
            "default_operating_point": str(package.meta.get("default_operating_point")),
            "arch": str(package.meta.get("arch")),
            "tta_flip": "true" if package.tta_flip else "false",
            "models_sha256": json.dumps([m.get("sha256") for m in package.meta["models"]]),
        }
        for key, value in meta.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        proto.doc_string = "thyro model package exported to ONNX: thyroid nodule malignancy probability."
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        diff = verify(tmp, module, sample_inputs(size))
        if not diff <= tolerance:
            raise ModelPackageError(f"ONNX export differs from PyTorch by {diff:.3g} (allowed {tolerance:g}); "
                                    f"not written. Try another opset.")
    return {"path": out, "opset": opset, "max_diff": diff, "max_abs_diff": diff, "n_models": len(module.members),
            "image_size": size}
