"""RadImageNet's Keras HDF5 files, read with h5py alone (no TensorFlow).

Both legacy Keras 2 layouts are read: ``model_weights/<layer>/<layer>/kernel:0`` (``model.save``)
and ``<layer>/<layer>/kernel:0`` (``save_weights``).  Layers are mapped by name to timm's modules.

Conversion rules (each one loads silently but wrongly if forgotten):

* kernels HWIO (Keras) become OIHW (PyTorch);
* conv biases (Keras ResNet50 convs have them; PyTorch's do not) are folded into the following
  BatchNorm exactly: ``running_mean' = moving_mean - bias``;
* BatchNorm keeps Keras's ``eps=1.001e-5`` and ResNet-50 puts the stride 2 of stages 3-5 on the
  first 1x1 convolution (Keras's ResNet50 is v1): the model is built in the ``"keras"`` layout
  (:func:`thyro.models.backbones.apply_keras_layout`).

Supported: ResNet50, DenseNet121 and InceptionV3.  InceptionV3's Keras layers are auto-numbered
(``conv2d_57``, ``batch_normalization_57``): the numbers follow the order in which Keras's
``InceptionV3()`` creates them, which is the order timm registers its ``BasicConv2d`` modules; every
shape is checked.  Its BatchNorm has no scale (gamma = 1) and its ``"same"`` average pooling leaves
the padding out of the mean (the ``"keras"`` layout reproduces that).  InceptionResNetV2 works the
same way; its named layers (``block35_3_conv`` with a bias, ``conv_7b``) map by name, and timm's
port already pools as TensorFlow does, so it needs no layout change.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import timm
import torch

from thyro.errors import WeightsError
from thyro.models.archs import arch as arch_info
from thyro.models.known import KERAS_BN_EPS, keras_archs, known, recognise_keras
from thyro.models.weights.formats import Converted


def _decode(names) -> list[str]:
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def read_keras_h5(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """Weights per Keras layer: ``{layer: {"kernel": array, "bias": ..., "gamma": ...}}`` and the layout."""
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"{path}: unreadable HDF5 file, probably truncated or corrupt ({exc}); copy it again.") from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    try:
        if "model_weights" in fh:
            root, layout = fh["model_weights"], "model.save"
        else:
            root, layout = fh, "save_weights"
        if "layer_names" not in root.attrs and isinstance(root.get("layers"), h5py.Group):
            raise WeightsError(f"{path}: a Keras 3 '.weights.h5' file; thyro reads Keras 2 HDF5 files "
                               "(RadImageNet's release format).")
        names = _decode(root.attrs["layer_names"]) if "layer_names" in root.attrs else list(root.keys())
        for name in names:
            if name not in root:
                continue
            group = root[name]
            if not isinstance(group, h5py.Group):  # a dataset at the top: not a Keras layer
                continue
            arrays: dict[str, np.ndarray] = {}
            if "weight_names" in group.attrs:
                for wname in _decode(group.attrs["weight_names"]):
                    arrays[wname.split("/")[-1].split(":")[0]] = np.asarray(group[wname])
            else:
                def visit(sub, obj, arrays=arrays):
                    if isinstance(obj, h5py.Dataset):
                        arrays[sub.split("/")[-1].split(":")[0]] = np.asarray(obj)
                group.visititems(visit)
            if arrays:
                layers[name] = arrays
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read the HDF5 file's weights ({exc}); is it truncated?") from None
    finally:
        fh.close()
    if not layers:
        raise WeightsError(f"{path}: an HDF5 file with no Keras layer weights (no groups of weight arrays at its top "
                           f"level or under model_weights/); is it a Keras 2 .h5 weight file?")
    return layers, layout


def guess_keras_arch(layers: dict) -> str | None:
    """Which Keras application the layer names belong to (the architecture table's recognisers)."""
    return recognise_keras(set(layers))


def _numbered(layers: dict, base: str) -> list[str]:
    """Layers named ``base``, ``base_1``, ``base_2``, ... sorted by their number (Keras's creation order)."""
    found = []
    for name in layers:
        if name == base:
            found.append((0, name))
        elif name.startswith(base + "_") and name[len(base) + 1:].isdigit():
            found.append((int(name[len(base) + 1:]), name))
    return [name for _, name in sorted(found)]


def conv_bn_modules(arch: str) -> list[str]:
    """timm's conv+BatchNorm modules of ``arch`` in registration order (built on the meta device)."""
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=1)
    return [name for name, m in model.named_modules()
            if isinstance(getattr(m, "conv", None), torch.nn.Conv2d) and hasattr(m, "bn")]


def _auto_numbered_state(path: Path, layers: dict, arch: str, modules: list[str]) -> tuple[dict, set[str]]:
    """Map ``conv2d[_N]``/``batch_normalization[_N]`` pairs, in number order, onto ``modules``."""
    convs, bns = _numbered(layers, "conv2d"), _numbered(layers, "batch_normalization")
    if len(convs) != len(modules) or len(bns) != len(modules):
        guess = guess_keras_arch(layers)
        hint = f" The file looks like {guess}." if guess and guess != arch else ""
        raise WeightsError(f"{path}: Keras HDF5 file does not fit {arch}: {len(convs)} conv2d and {len(bns)} "
                           f"batch_normalization layers, expected {len(modules)} of each.{hint}")
    state: dict[str, torch.Tensor] = {}
    for kconv, kbn, module in zip(convs, bns, modules):
        if "bias" in layers[kconv]:
            raise WeightsError(f"{path}: layer {kconv} has a conv bias; Keras's {arch} conv2d_bn layers have none.")
        w = _conv(layers[kconv])
        state[f"{module}.conv.weight"] = w
        state.update(_bn(layers[kbn], f"{module}.bn", w.shape[0]))
    return state, set(convs) | set(bns)


def _numbered_state(path: Path, layers: dict, arch: str, spec) -> tuple[dict[str, torch.Tensor], set[str], list[str]]:
    """Auto-numbered conv2d/batch_normalization pairs in creation order (InceptionV3)."""
    state, used = _auto_numbered_state(path, layers, arch, conv_bn_modules(arch))
    return state, used, ["auto-numbered conv2d/batch_normalization layers matched to timm modules in creation order",
                         "Keras layout: average pooling before branch_pool excludes the padding (TensorFlow 'same')"]


def _numbered_named_state(path: Path, layers: dict, arch: str, spec) -> tuple[dict[str, torch.Tensor], set[str],
                                                                                  list[str]]:
    """Auto-numbered pairs plus named layers: InceptionResNetV2's last block and residual up-projections."""
    modules = [m for m in conv_bn_modules(arch) if m != "conv2d_7b"]
    state, used = _auto_numbered_state(path, layers, arch, modules)
    named = [("conv_7b", "conv_7b_bn", "conv2d_7b")]
    missing = [n for n in ("conv_7b", "conv_7b_bn") if n not in layers]
    up = spec.layer_map()
    missing += [k for k, _ in up if k not in layers]
    if missing:
        raise _missing_error(path, arch, missing, layers)
    for kconv, kbn, module in named:
        w = _conv(layers[kconv])
        state[f"{module}.conv.weight"] = w
        state.update(_bn(layers[kbn], f"{module}.bn", w.shape[0]))
        used.update((kconv, kbn))
    for kconv, module in up:
        state[f"{module}.weight"] = _conv(layers[kconv])
        if "bias" not in layers[kconv]:
            raise WeightsError(f"{path}: layer {kconv} has no bias; Keras's InceptionResNetV2 has one there.")
        state[f"{module}.bias"] = torch.from_numpy(np.asarray(layers[kconv]["bias"], dtype=np.float32))
        used.add(kconv)
    return state, used, ["auto-numbered conv2d/batch_normalization layers matched to timm modules in creation order"]


def _pairs_state(path: Path, layers: dict, arch: str, spec) -> tuple[dict[str, torch.Tensor], set[str], list[str]]:
    """Named conv + BatchNorm pairs (ResNet50); conv biases folded into the BatchNorm."""
    table = spec.layer_map()
    missing = [n for row in table for n in row[:2] if n not in layers]
    if missing:
        raise _missing_error(path, arch, missing, layers)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    n_bias = 0
    for kconv, kbn, tconv, tbn in table:
        w = _conv(layers[kconv])
        bn = _bn(layers[kbn], tbn, w.shape[0])
        if "bias" in layers[kconv]:
            bn[f"{tbn}.running_mean"] = bn[f"{tbn}.running_mean"] - torch.from_numpy(
                np.asarray(layers[kconv]["bias"], dtype=np.float32))
            n_bias += 1
        state[f"{tconv}.weight"] = w
        state.update(bn)
        used.update((kconv, kbn))
    return state, used, [f"{n_bias} conv biases folded into the following BatchNorm running_mean",
                         "Keras layout: BatchNorm eps 1.001e-5, stride 2 on the first 1x1 conv of stages 3-5 (ResNet v1)"]


def _layers_state(path: Path, layers: dict, arch: str, spec) -> tuple[dict[str, torch.Tensor], set[str], list[str]]:
    """Named layers of a kind (DenseNet121): convolutions without bias, BatchNorms."""
    table = spec.layer_map()
    missing = [k for k, _, _ in table if k not in layers]
    if missing:
        raise _missing_error(path, arch, missing, layers)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for kname, kind, tname in table:
        arrays = layers[kname]
        if kind == "conv":
            if "bias" in arrays:
                raise WeightsError(f"{path}: layer {kname} has a conv bias; Keras's {arch} has none there.")
            state[f"{tname}.weight"] = _conv(arrays)
        else:
            n = len(next(iter(arrays.values())))
            state.update(_bn(arrays, tname, n))
        used.add(kname)
    return state, used, [f"Keras layout: BatchNorm eps {KERAS_BN_EPS}"]


#: The converter of each of the architecture table's Keras conversion strategies.
_STRATEGIES = {"pairs": _pairs_state, "layers": _layers_state, "numbered": _numbered_state,
               "numbered+named": _numbered_named_state}


def _is_dense(arrays: dict[str, np.ndarray]) -> bool:
    kernel = arrays.get("kernel")
    return kernel is not None and kernel.ndim == 2


def _conv(arrays: dict[str, np.ndarray]) -> torch.Tensor:
    kernel = arrays["kernel"]
    if kernel.ndim != 4:
        raise WeightsError(f"expected a 4-d conv kernel, got shape {kernel.shape}")
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()


def _bn(arrays: dict[str, np.ndarray], prefix: str, channels: int) -> dict[str, torch.Tensor]:
    def get(name, fill):
        a = arrays.get(name)
        return torch.from_numpy(np.asarray(a, dtype=np.float32)) if a is not None else torch.full((channels,), fill)
    return {f"{prefix}.weight": get("gamma", 1.0), f"{prefix}.bias": get("beta", 0.0),
            f"{prefix}.running_mean": get("moving_mean", 0.0), f"{prefix}.running_var": get("moving_variance", 1.0)}


def _missing_error(path: Path, arch: str, missing: list[str], layers: dict) -> WeightsError:
    guess = guess_keras_arch(layers)
    hint = f" The file looks like {guess}." if guess and guess != arch else ""
    return WeightsError(f"{path}: Keras HDF5 file does not fit {arch}: {len(missing)} layer(s) missing, first: "
                        f"{', '.join(missing[:5])}.{hint}")


def convert_keras_h5(path: Path, arch: str) -> Converted:
    """Convert a Keras HDF5 file of ``arch`` to timm names (see the module docstring)."""
    layers, layout = read_keras_h5(path)
    supported = keras_archs()
    row = known(arch)
    if row.keras is None:
        guess = guess_keras_arch(layers)
        hint = f"; the file looks like {guess}" if guess else ""
        raise WeightsError(
            f"{path}: Keras HDF5 weights are converted for {', '.join(supported)} only, not {arch}{hint}. "
            "Set the arm's backbone to the file's architecture, or use a PyTorch export of these weights "
            "(e.g. RadImageNet's, keys backbone.N.*).")
    state, used, steps = _STRATEGIES[row.keras.conversion](path, layers, arch, row.keras)
    notes = [f"Keras HDF5 ({layout} layout), kernels HWIO -> OIHW", *steps]
    extra = [n for n in layers if n not in used]
    unexpected = [n for n in extra if not _is_dense(layers[n])]
    if unexpected:
        guess = guess_keras_arch(layers)
        hint = f" The file looks like {guess}." if guess and guess != arch else ""
        raise WeightsError(f"{path}: Keras HDF5 file does not fit {arch}: {len(unexpected)} layer(s) with no place "
                           f"in it, first: {', '.join(unexpected[:5])}.{hint}")
    if extra:
        notes.append(f"{len(extra)} Keras dense layer(s) not used (classification top): {', '.join(extra[:3])}")
    return Converted(state=state, format=f"Keras HDF5 ({layout})", layout="keras" if row.keras.layout else "timm",
                     input_spec=arch_info(arch).keras_input_spec(), arch=arch, notes=notes, keras_origin=True)
