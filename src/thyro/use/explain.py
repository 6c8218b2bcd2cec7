"""Heatmaps (Grad-CAM, Grad-CAM++) of a one-logit model, on the original image and on the model's input.

pytorch-grad-cam's ``ClassifierOutputTarget(1)`` indexes column 1 of the output, which a one-logit
binary model does not have (or, with a (B, 1) output, silently explains the wrong thing); with no
target it takes the argmax over a single column.  :class:`LogitTarget` returns the logit itself, so
the heatmap shows the evidence for "malignant" (``sign=-1`` gives the evidence for "benign").

For a fold ensemble the heatmap is the mean of the fold models' heatmaps.  It is computed on the
image as given (not on its mirror, even when the package uses flip test-time augmentation for the
probability).

The heatmap is computed on the model's input (the preprocessed crop) and put back onto the original
image through the preprocessing's :class:`thyro.data.preprocess.Geometry` (padding dropped, resized
to the crop box, placed there), so a reader sees where on the scan the evidence lies: the figure
shows the original at full resolution with the heatmap inside the crop box (outlined), beside the
model's input with its heatmap drawn inside the image only (never on the letterbox padding), a colour
bar (the heatmap is relative: 0 to 1 within the image), and the caption wrapped in its own band below.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from thyro.errors import ThyroError
from thyro.fileio import atomic_path, write_csv
from thyro.use.bundle import ModelPackage, load_package

METHODS = ("gradcam", "gradcam++")


class LogitTarget:
    """Grad-CAM target for a model with one logit per image: the logit (times ``sign``)."""

    def __init__(self, sign: float = 1.0):
        self.sign = float(sign)

    def __call__(self, model_output):
        # pytorch-grad-cam calls the target on one image's output: a 0-d tensor for (B,) outputs,
        # shape (1,) for (B, 1) outputs.
        return self.sign * model_output.reshape(-1)[0]


def find_target_layer(model):
    """The module whose activations Grad-CAM weighs, and how to make its output a ``(B, C, H, W)`` map.

    For a :class:`~thyro.models.ThyroNet` the architecture says (:func:`thyro.models.archs.arch`): the last
    feature stage of a CNN (``layer4`` for ResNets, the last block of an EfficientNet), the last block's first
    norm of a vision transformer (its tokens, the class and register tokens dropped, laid back on the patch
    grid), a channels-last stage permuted.  Other models: timm's ``feature_info``, else the last ``Conv2d``.

    Returns
    -------
    (module, reshape_transform or None)
    """
    import torch.nn as nn

    from thyro.models.archs import arch as arch_info

    name = getattr(model, "arch", None)
    if isinstance(name, str) and hasattr(model, "backbone"):
        info = arch_info(name)
        layer = model.backbone.get_submodule(info.cam_layer)
        if info.cam_format == "tokens":
            return layer, functools.partial(_tokens_to_map, prefix=info.prefix_tokens)
        if info.cam_format == "nhwc":
            return layer, _nhwc_to_nchw
        return layer, None
    for module in model.modules():
        info = getattr(module, "feature_info", None)
        if info is None:
            continue
        try:
            last = info[-1]
            name = last["module"] if isinstance(last, dict) else info.module_name()[-1]
            return module.get_submodule(name), None
        except (AttributeError, KeyError, IndexError, TypeError):
            continue
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ThyroError("cannot find a convolutional layer for Grad-CAM in this model.")
    return convs[-1], None


def _tokens_to_map(x, prefix: int = 0):
    """Tokens ``(B, N, C)`` of a vision transformer to a map ``(B, C, h, w)`` on its (square) patch grid."""
    x = x[:, prefix:, :]
    side = int(round(x.shape[1] ** 0.5))
    return x.reshape(x.shape[0], side, side, x.shape[2]).permute(0, 3, 1, 2)


def _nhwc_to_nchw(x):
    return x.permute(0, 3, 1, 2)


def _cam_class(method: str):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    if method not in METHODS:
        raise ThyroError(f"--method {method!r}: choose one of {', '.join(METHODS)}.")
    return GradCAM if method == "gradcam" else GradCAMPlusPlus


def heatmaps(models: Sequence, images: np.ndarray, method: str = "gradcam", *, sign: float = 1.0) -> np.ndarray:
    """Heatmaps in [0, 1], shape (B, S, S), for uint8 or float [0, 1] images of shape (B, S, S).

    Each model's heatmap is computed with its own last feature stage; the ensemble's is their mean.
    A batch takes one forward and one backward pass per model, and the backward pass runs from the
    logit to the target layer only (:func:`_gradients_from_target_layer`).
    """
    import torch

    cam_cls = _cam_class(method)
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    x = torch.from_numpy(np.ascontiguousarray(arr)).float()
    if arr.dtype == np.uint8:
        x = x / 255.0
    x = x.unsqueeze(1)
    total = np.zeros(arr.shape, dtype=np.float64)
    for model in models:
        model.eval()
        layer, reshape = find_target_layer(model)
        with _gradients_from_target_layer(model, layer), \
                cam_cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            total += cam(input_tensor=x, targets=[LogitTarget(sign)] * arr.shape[0])
    return (total / max(len(models), 1)).astype(np.float32)


@contextlib.contextmanager
def _gradients_from_target_layer(model, layer):
    """While the block runs, autograd records the model from ``layer``'s output on, and nothing before.

    Grad-CAM needs the gradient of the logit with respect to the target layer's activations, no more:
    with the weights' ``requires_grad`` off and the layer's output made a leaf that requires it, the
    backward pass runs through the head alone instead of the whole network to the input (on a 64 px
    ResNet-18 batch it was three quarters of the time).  The gradients and so the heatmaps are the same.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)

    def leaf(module, args, output):
        # a leaf that requires the gradient, cloned so that an in-place operation after the layer is allowed
        return output.detach().requires_grad_(True).clone()

    handle = layer.register_forward_hook(leaf, prepend=True)  # before pytorch-grad-cam's own hooks
    try:
        yield
    finally:
        handle.remove()
        for p in params:
            p.requires_grad_(True)


def overlay(image: np.ndarray, heatmap: np.ndarray, weight: float = 0.55) -> np.ndarray:
    """RGB uint8 overlay of a heatmap (jet colormap) on a grayscale uint8 image of the same size."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    gray = np.asarray(image, dtype=np.float32) / 255.0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    return show_cam_on_image(rgb, np.clip(heatmap, 0, 1).astype(np.float32), use_rgb=True, image_weight=weight)


def colour_map(heatmap: np.ndarray) -> np.ndarray:
    """RGB uint8 jet colours of a map in [0, 1] (the colours of :func:`overlay` and the colour bar)."""
    import cv2

    values = np.uint8(np.round(255 * np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1)))
    return cv2.cvtColor(cv2.applyColorMap(values, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def image_region(geometry) -> tuple[slice, slice]:
    """Rows and columns of the model's input that show the image (the rest is letterbox padding)."""
    left, top = geometry.offset
    width, height = geometry.resized
    return slice(top, top + height), slice(left, left + width)


def within_image(heatmap: np.ndarray, geometry) -> np.ndarray:
    """The heatmap with the letterbox padding dropped (0 there) and scaled to [0, 1] over the image alone.

    Grad-CAM scales a map by its maximum over the whole input, padding included; evidence "found" in the
    padding says nothing about the scan, so it is left out before the map is shown.
    """
    hm = np.asarray(heatmap, dtype=np.float32)
    rows, cols = image_region(geometry)
    part = np.clip(hm[rows, cols], 0, None)
    top = float(part.max()) if part.size else 0.0
    out = np.zeros_like(hm)
    out[rows, cols] = part / top if top > 0 else 0.0
    return out


def overlay_input(image: np.ndarray, heatmap: np.ndarray, geometry, weight: float = 0.55) -> np.ndarray:
    """:func:`overlay` on the model's input, inside the image only: the letterbox padding stays grey."""
    gray = np.asarray(image, dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2).copy()
    rows, cols = image_region(geometry)
    rgb[rows, cols] = overlay(gray[rows, cols], within_image(heatmap, geometry)[rows, cols], weight)
    return rgb


def on_original(frame: np.ndarray, geometry, heatmap: np.ndarray, weight: float = 0.5,
                box_colour: tuple[int, int, int] = (255, 220, 0)) -> np.ndarray:
    """The original frame (RGB or gray uint8, full resolution) with a model-input heatmap put back
    on it inside the crop box, and the crop box outlined.

    ``geometry`` is the preprocessing's :class:`thyro.data.preprocess.Geometry`: the padding is dropped
    (:func:`within_image`) and the rest resized onto the crop box's pixels; outside the crop the frame is
    shown as it is.
    """
    import cv2

    rgb = np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame[..., :3]
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    hm = geometry.to_frame_map(within_image(heatmap, geometry))
    x0, y0, x1, y1 = geometry.to_frame(geometry.crop_box)
    part = rgb[y0:y1, x0:x1].astype(np.float32)
    colours = colour_map(hm[y0:y1, x0:x1]).astype(np.float32)
    rgb[y0:y1, x0:x1] = np.clip((1 - weight) * part + weight * colours, 0, 255).astype(np.uint8)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), box_colour, thick)
    return rgb


def colour_bar(height: int, label: str = "relative evidence for malignant") -> np.ndarray:
    """A vertical colour bar (high at the top) with ticks 0, 0.5, 1 and a label, RGB uint8."""
    from PIL import Image, ImageDraw

    height = max(int(height), 60)
    bar_w, width = 14, 118
    ramp = colour_map(np.linspace(1, 0, height - 20)[:, None].repeat(bar_w, axis=1))
    img = Image.new("RGB", (width, height), "white")
    img.paste(Image.fromarray(ramp), (4, 10))
    draw = ImageDraw.Draw(img)
    for value, y in ((1.0, 10), (0.5, 10 + (height - 21) // 2), (0.0, height - 11)):
        draw.line([(4 + bar_w, y), (4 + bar_w + 3, y)], fill=(0, 0, 0))
        draw.text((4 + bar_w + 5, y - 5), f"{value:.1f}", fill=(0, 0, 0))
    lines, line = [], ""
    for word in label.split():  # wrap the label beside the ticks
        if line and len(line) + 1 + len(word) > 11:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    for k, text in enumerate(lines[: max(1, (height - 20) // 12)]):
        draw.text((46, 10 + k * 12), text, fill=(60, 60, 60))
    return np.asarray(img)


def with_colour_bar(rgb: np.ndarray) -> np.ndarray:
    """An RGB image with :func:`colour_bar` beside it (as tall as the image, at least 60 pixels)."""
    bar = colour_bar(rgb.shape[0])
    h = max(rgb.shape[0], bar.shape[0])
    out = np.full((h, rgb.shape[1] + 6 + bar.shape[1], 3), 255, np.uint8)
    out[:rgb.shape[0], :rgb.shape[1]] = rgb
    out[:bar.shape[0], rgb.shape[1] + 6:] = bar
    return out


def caption_band(text: str, width: int, font_px: int) -> np.ndarray:
    """A white band ``width`` pixels wide holding ``text`` wrapped to it (as many lines as it takes), RGB uint8.

    The caption gets a band of its own below the pictures, so it never covers the image or the heatmap.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_px)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(3, font_px // 3)
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            while measure.textlength(word, font=font) > width - 2 * pad and len(word) > 1:  # a long path: cut it
                cut = max(1, int(len(word) * (width - 2 * pad) / measure.textlength(word, font=font)))
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            trial = f"{line} {word}".strip()
            if line and measure.textlength(trial, font=font) > width - 2 * pad:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    step = round(font_px * 1.3)
    band = Image.new("RGB", (width, 2 * pad + step * len(lines)), "white")
    draw = ImageDraw.Draw(band)
    for k, line in enumerate(lines):
        draw.text((pad, pad + k * step), line, fill=(0, 0, 0), font=font)
    return np.asarray(band)


def explanation_figure(frame: np.ndarray, geometry, model_input: np.ndarray, heatmap: np.ndarray,
                       caption: str = "") -> np.ndarray:
    """The figure ``explain`` writes: the original frame at full resolution with the heatmap on it
    (:func:`on_original`), the model's input with its heatmap inside the image (scaled to the frame's
    height; :func:`overlay_input`), a colour bar, and the caption wrapped in a band below them
    (:func:`caption_band`).  RGB uint8."""
    from PIL import Image

    left = on_original(frame, geometry, heatmap)
    h = left.shape[0]
    right = np.asarray(Image.fromarray(overlay_input(model_input, heatmap, geometry)).resize((h, h), Image.BILINEAR))
    bar = colour_bar(h)
    gap = 8
    width = left.shape[1] + gap + h + gap + bar.shape[1]
    band = caption_band(caption, width, font_px=max(11, round(width / 90)))
    fig = Image.new("RGB", (width, h + band.shape[0]), "white")
    fig.paste(Image.fromarray(left), (0, 0))
    fig.paste(Image.fromarray(right), (left.shape[1] + gap, 0))
    fig.paste(Image.fromarray(bar), (left.shape[1] + gap + h + gap, 0))
    fig.paste(Image.fromarray(band), (0, h))
    return np.asarray(fig)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB (or gray) uint8 array as PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")
    return path


def _safe_name(name: str) -> str:
    p = Path(name)
    parts = [x for x in p.parts if x not in (p.anchor, "..", ".")]
    stem = "__".join(parts[:-1] + [Path(parts[-1]).stem]) if parts else "image"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[-150:]


def _as_models(model_dir_or_models) -> tuple[list, ModelPackage | None]:
    if isinstance(model_dir_or_models, ModelPackage):
        return model_dir_or_models.load_torch_models(), model_dir_or_models
    if isinstance(model_dir_or_models, (str, os.PathLike)):
        package = load_package(model_dir_or_models)
        return package.load_torch_models(), package
    if isinstance(model_dir_or_models, (list, tuple)):
        return list(model_dir_or_models), None
    return [model_dir_or_models], None


def explain(model_dir: str | os.PathLike | ModelPackage, inputs, out_dir: str | os.PathLike, *,
            method: str = "gradcam", roi: dict | None = None, batch_size: int = 8, point: str | None = None,
            progress: bool = True, frames: str = "first") -> list[dict]:
    """Write, per input image, a full-resolution figure (the heatmap on the original image with the
    crop box, beside the model's input with its heatmap, and a colour bar) and the model-input
    overlay alone, under ``out_dir``, and an ``index.csv``.

    Returns one dict per input: ``input, png, input_png, probability, probability_of, model_label_source,
    model_label_definition, class, crop_box, warning, error`` (``png`` is the full-resolution figure;
    ``probability_of`` and the ``model_label_*`` columns say what the probability is of, as in
    ``thyro predict``'s CSV; ``crop_box`` is in the file's pixels).  Unreadable
    inputs get an error and the others go on.  ``frames``: ``"first"`` draws frame 0 of a multi-frame
    file (the ``warning`` says how many it has), ``"all"`` one heatmap per frame (``NAME#frame=K``).
    """
    from thyro.console import track
    from thyro.use.engines import TorchEngine
    from thyro.use.inputs import _error_text, collect_inputs, frame_items, prepare_item

    _cam_class(method)  # validate before any work
    if frames not in ("first", "all"):
        raise ThyroError(f"--frames {frames!r}: explain draws one heatmap per image; choose first or all.")
    package = model_dir if isinstance(model_dir, ModelPackage) else load_package(model_dir)
    _, threshold = package.operating_point(point)
    models = package.load_torch_models()
    engine = TorchEngine(models, tta_flip=package.tta_flip)  # the probability as predict gives it
    pre = package.preprocessor()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = [item for _, item, _ in frame_items(collect_inputs(inputs, roi), frames)]
    results: list[dict] = []
    used: set[str] = set()
    try:  # file names relative to the folder all inputs share
        base = os.path.commonpath([str(i.path.resolve().parent) for i in items]) if items else ""
    except ValueError:
        base = ""
    suffix = "gradcampp" if method == "gradcam++" else "gradcam"
    meaning = package.label_meaning  # what the probability is of, as predict's CSV says it
    model_labels = {"probability_of": meaning.positive, "model_label_source": meaning.source,
                    "model_label_definition": meaning.definition}
    iterator = track(items, f"explaining ({method})") if progress else items
    for item in iterator:
        rec = {"input": item.name, "png": "", "input_png": "", "probability": None, **model_labels, "class": None,
               "crop_box": "", "warning": "", "error": ""}
        try:
            prepared = prepare_item(pre, item, package.image_size, frame=True)
            img, rec["warning"] = prepared.image, prepared.warning
            prob = float(engine(img[None])[0])
            cam = heatmaps(models, img[None], method)[0]
            name = _safe_name(os.path.relpath(item.path.resolve(), base) if base else item.name)
            if item.frame is not None:
                name += f".frame{item.frame}"
            while name in used:
                name += "_"
            used.add(name)
            g = prepared.geometry
            box = g.to_frame(g.crop_box)
            caption = (f"{item.name}: {meaning.probability_name} {prob:.3f} (labels: {meaning.provenance}); {method} "
                       f"inside the crop box {box[0]},{box[1]}-{box[2]},{box[3]}").replace("≥", ">=")  # bitmap font
            png = save_png(out / f"{name}.{suffix}.png", explanation_figure(prepared.frame, g, img, cam, caption))
            small = save_png(out / f"{name}.{suffix}.input.png", overlay_input(img, cam, g))
            rec.update(png=png.name, input_png=small.name, probability=prob, crop_box=" ".join(map(str, box)),
                       **{"class": int(prob >= threshold)})
        except (ThyroError, OSError, ValueError) as exc:
            rec["error"] = _error_text(exc)
        except Exception as exc:  # one bad file must not stop the others
            rec["error"] = f"{type(exc).__name__}: {_error_text(exc)}"
        results.append(rec)
    write_csv(out / "index.csv", results, ["input", "png", "input_png", "probability", *model_labels, "class",
                                          "crop_box", "warning", "error"])
    return results


def montage(model_dir_or_models, images, labels, probs, out_png: str | os.PathLike, *,
            threshold: float | None = None, per_group: int = 4, method: str = "gradcam",
            titles: Sequence[str] | None = None) -> dict[str, list[int]]:
    """A figure of test cases by outcome, true/false positives/negatives, each with its heatmap.

    Parameters
    ----------
    model_dir_or_models : model directory, ModelPackage, a model, or a list of fold models
    images : preprocessed uint8 images, array (N, S, S) or a list of (S, S) arrays; or image file
        paths when ``model_dir_or_models`` is a model directory (preprocessed with its settings;
        each case is then shown on its original image, the heatmap inside the crop box)
    labels, probs : per image; 1 = malignant
    out_png : PNG path (written atomically)
    threshold : the class cut-off; default the package's operating point, else 0.5
    per_group : images per outcome; the most confident cases of each outcome are shown

    Returns
    -------
    dict
        The indices shown per outcome (``"TP"``, ``"FP"``, ``"TN"``, ``"FN"``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    models, package = _as_models(model_dir_or_models)
    if threshold is None:
        threshold = package.operating_point()[1] if package is not None else 0.5
    originals: dict[int, tuple] = {}  # index -> (full frame, geometry) for images given as files
    if any(isinstance(i, (str, os.PathLike)) for i in images):
        if package is None:
            raise ThyroError("montage: image paths need a model directory (for its preprocessing); "
                             "with bare models pass preprocessed uint8 arrays.")
        from thyro.use.inputs import InputItem, prepare_item

        pre = package.preprocessor()
        arrays = []
        for k, i in enumerate(images):
            if isinstance(i, (str, os.PathLike)):
                prepared = prepare_item(pre, InputItem(Path(i), str(i)), package.image_size, frame=True)
                originals[k] = (prepared.frame, prepared.geometry)
                arrays.append(prepared.image)
            else:
                arrays.append(i)
        images = arrays
    imgs = np.stack([np.asarray(i) for i in images]) if len(images) else np.empty((0, 1, 1), np.uint8)
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    if not (len(imgs) == len(y) == len(p)):
        raise ThyroError(f"montage: {len(imgs)} images, {len(y)} labels and {len(p)} probabilities; they must match.")
    pred = p >= threshold
    groups = {"TP": (y == 1) & pred, "FP": (y == 0) & pred, "TN": (y == 0) & ~pred, "FN": (y == 1) & ~pred}
    chosen: dict[str, list[int]] = {}
    for name, mask in groups.items():
        idx = np.flatnonzero(mask)
        order = np.argsort(-p[idx]) if name in ("TP", "FP") else np.argsort(p[idx])  # most confident first
        chosen[name] = idx[order][:per_group].tolist()
    shown = sorted({i for v in chosen.values() for i in v})
    cams = dict(zip(shown, heatmaps(models, imgs[shown], method))) if shown else {}
    fig, axes = plt.subplots(4, per_group, figsize=(2.2 * per_group, 9.4), squeeze=False)
    names = {"TP": "true positive", "FP": "false positive", "TN": "true negative", "FN": "false negative"}
    for r, (name, idxs) in enumerate(chosen.items()):
        for c in range(per_group):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(idxs):
                i = idxs[c]
                if i in originals:  # the original image, the heatmap put back inside the crop box
                    ax.imshow(on_original(originals[i][0], originals[i][1], cams[i]))
                else:
                    ax.imshow(overlay(imgs[i], cams[i]))
                label = titles[i] if titles is not None else f"#{i}"
                ax.set_title(f"{label}\np = {p[i]:.2f}", fontsize=8)
            elif c == 0:
                ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        axes[r, 0].text(-0.08, 0.5, f"{names[name]} ({int(groups[name].sum())})", rotation=90, ha="right",
                        va="center", fontsize=9, transform=axes[r, 0].transAxes)
    fig.suptitle(f"Test cases by outcome at threshold {threshold:.3f} ({method})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    from matplotlib import cm, colors

    bar_ax = fig.add_axes((0.93, 0.15, 0.015, 0.7))
    fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap="jet"), cax=bar_ax,
                 label="heatmap: relative evidence for malignant")
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return chosen
