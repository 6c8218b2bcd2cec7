"""Architectures: any name timm knows, described from timm's own model and ``pretrained_cfg``.

:func:`arch` is the one place every other module asks (configuration, weight sources, backbones,
``thyro weights inspect --arch``, Grad-CAM).  It builds the network once on PyTorch's ``meta`` device
(no memory, no weights, no network), runs one forward pass there and reads off what thyro needs:

* the first convolution and the classification head (``pretrained_cfg["first_conv"]`` and
  ``["classifier"]``), the BatchNorm the first convolution feeds directly (traced, not guessed), and
  whether that convolution has a bias (where a one-channel model folds the input normalisation);
* the native input size, mean/std and interpolation of its default ImageNet tag;
* the pooled feature width the head reads, the feature stage Grad-CAM weighs (timm's ``feature_info``)
  and the shape of that stage's output: ``(B, C, H, W)``, channels last ``(B, H, W, C)``, or tokens
  ``(B, N, C)`` with a number of prefix (class, register) tokens, as vision transformers give;
* which build options the family takes: ``img_size`` (vision transformers are built for the study's input
  size, their position embedding resampled from the weights' grid when loaded; a fixed size keeps them
  exportable to ONNX) and TensorFlow's ``"same"`` padding with BatchNorm eps 1e-3 (the ``tf`` layout of
  the EfficientNet/MobileNet family: weights trained in TensorFlow need it).

What timm cannot know stays in the hand-kept rows of :mod:`thyro.models.known` (torchvision file names,
Keras layer maps).  An unknown name is a :class:`~thyro.errors.ConfigError` naming the three closest
names timm knows.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass

import timm
import torch
from torch import nn

from thyro.errors import ConfigError
from thyro.models.adapter import InputSpec
from thyro.models.known import KERAS_BN_EPS, Known, known

__all__ = ["KERAS_BN_EPS", "LAYOUTS", "ArchInfo", "arch", "check_arch", "timm_kwargs"]

#: Network layouts: timm's own; Keras's (RadImageNet's files, see :mod:`thyro.models.backbones`); TensorFlow's
#: ``"same"`` padding with BatchNorm eps 1e-3 (EfficientNet/MobileNet weights trained in TensorFlow).
LAYOUTS: tuple[str, ...] = ("timm", "keras", "tf")
TF_BN_EPS = 1e-3


@dataclass(frozen=True)
class ArchInfo:
    """What thyro knows about one timm architecture (see the module docstring).

    Attributes
    ----------
    name : str
        timm's model name (``efficientnet_lite0``).
    family : str
        timm's model class (``EfficientNet``, ``ResNet``, ``VisionTransformer``, ...).
    first_conv : str
        Module name of the first convolution.
    head : tuple of str
        Module names of the classification head (one for most models).
    first_norm : str or None
        The BatchNorm that reads the first convolution's output directly, if any.
    first_conv_bias : bool
        The first convolution has a bias.
    native_size : int
        Side of the input its ImageNet weights were trained at.
    mean, std : tuple of 3 floats
        Normalisation of its default ImageNet tag.
    interpolation : str
    num_features : int
        Width of the pooled features the head reads.
    cam_layer : str
        Module Grad-CAM weighs: the last feature stage, the last block's first norm for token models, or for a
        multi-branch network whose last stage returns several maps (HRNet) the last layer that returns one.
    cam_format : {"nchw", "nhwc", "tokens"}
        Shape of ``cam_layer``'s output.
    prefix_tokens : int
        Tokens before the patch tokens (``"tokens"`` format only).
    fixed_size : bool
        Built for one input size (``img_size``; vision transformers): see :func:`timm_kwargs`.
    tf_layout : bool
        The family accepts TensorFlow's padding and BatchNorm eps (the ``tf`` layout).
    reduction : int
        Total stride of the last feature stage (inputs must be at least this large).
    """

    name: str
    family: str
    first_conv: str
    head: tuple[str, ...]
    first_norm: str | None
    first_conv_bias: bool
    native_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    num_features: int
    cam_layer: str
    cam_format: str
    prefix_tokens: int
    fixed_size: bool
    tf_layout: bool
    reduction: int

    @property
    def known(self) -> Known:
        """The hand-kept row (torchvision files, Keras specification); empty for most architectures."""
        return known(self.name)

    @property
    def first_conv_key(self) -> str:
        """State-dict key of the first convolution's weight."""
        return self.first_conv + ".weight"

    def is_head_key(self, key: str) -> bool:
        """True when state-dict ``key`` belongs to the classification head."""
        return any(key.startswith(h + ".") for h in self.head)

    def imagenet_input_spec(self) -> InputSpec:
        """The input its default ImageNet tag expects (timm's ``pretrained_cfg``)."""
        return InputSpec(mean=self.mean, std=self.std, input_size=self.native_size)

    def keras_input_spec(self) -> InputSpec:
        """What Keras's ``preprocess_input`` did for this architecture (RadImageNet was trained so)."""
        spec = self.known.keras
        return spec.input_spec(self.native_size) if spec else InputSpec.imagenet(self.native_size)

    def layouts(self) -> tuple[str, ...]:
        """The layouts this architecture can be built in."""
        keras = self.known.keras
        return ("timm",) + (("keras",) if keras is not None and keras.layout else ()) + (
            ("tf",) if self.tf_layout else ())

    def describe(self) -> str:
        """One line: family, native size, features, head."""
        return (f"{self.name} (timm {self.family}; {self.native_size} px native, {self.num_features} pooled "
                f"features, head {', '.join(self.head)})")


def timm_kwargs(info: ArchInfo, layout: str = "timm", image_size: int | None = None) -> dict:
    """Build options for ``timm.create_model`` beyond the name: the input size of fixed-size architectures
    (``image_size``, default the native one), TensorFlow's layout."""
    kwargs: dict = {}
    if info.fixed_size:
        kwargs["img_size"] = int(image_size or info.native_size)
    if layout == "tf":
        if not info.tf_layout:
            raise ConfigError(f"layout 'tf' (TensorFlow 'same' padding) is available for the EfficientNet/MobileNet "
                              f"family, not {info.name} (timm {info.family}).")
        kwargs.update(pad_type="same", bn_eps=TF_BN_EPS)
    return kwargs


def check_arch(name: str) -> str:
    """Return ``name`` if timm knows it, else raise :class:`ConfigError` naming the three closest names."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a backbone is a timm model name (e.g. resnet18, efficientnet_lite0), got {name!r}.")
    if _is_model(name):
        return name
    base, dot, tag = name.partition(".")
    if dot and _is_model(base):
        raise ConfigError(f"backbone {name!r}: name the architecture ({base!r}); a pretrained tag ({tag!r}) belongs "
                          f"in weights (weights: imagenet looks for {base}'s tags in the caches).")
    close = difflib.get_close_matches(name, _names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown backbone {name!r}: timm has no model of that name{hint} "
                      "(python -c \"import timm; print(timm.list_models('*lite*'))\" lists names).")


@functools.lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    return tuple(timm.list_models())


@functools.lru_cache(maxsize=None)
def _is_model(name: str) -> bool:
    return name in set(_names())


@functools.lru_cache(maxsize=None)
def arch(name: str) -> ArchInfo:
    """The :class:`ArchInfo` of timm architecture ``name`` (cached).

    Raises
    ------
    ConfigError
        Unknown names (with the three closest), and architectures thyro cannot use (no convolution to take
        grey images, no classification head), naming the architecture and the reason.
    """
    check_arch(name)
    model = _meta_model(name)
    params = set(inspect.signature(type(model).__init__).parameters)
    tf_layout = "pad_type" in params and _accepts(name, pad_type="same", bn_eps=TF_BN_EPS)
    cfg = dict(model.pretrained_cfg or {})
    first_conv = _first_conv(model, cfg, name)
    head = _head(model, cfg, name)
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    trace = _trace(model, first_conv, _cam_stage(model), size)
    mean = tuple(float(v) for v in (cfg.get("mean") or InputSpec.imagenet().mean))
    std = tuple(float(v) for v in (cfg.get("std") or InputSpec.imagenet().std))
    return ArchInfo(
        name=name, family=type(model).__name__, first_conv=first_conv, head=head, first_norm=trace["first_norm"],
        first_conv_bias=model.get_submodule(first_conv).bias is not None, native_size=size,
        mean=mean[:3] if len(mean) >= 3 else mean * 3, std=std[:3] if len(std) >= 3 else std * 3,
        interpolation=str(cfg.get("interpolation") or "bilinear"),
        num_features=int(getattr(model, "head_hidden_size", None) or model.num_features),
        cam_layer=trace["cam_layer"], cam_format=trace["cam_format"],
        prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0) if trace["cam_format"] == "tokens" else 0,
        fixed_size="img_size" in params, tf_layout=tf_layout, reduction=trace["reduction"])


def _meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=1, **kwargs)


def _accepts(name: str, **kwargs) -> bool:
    """Whether timm's builder of ``name`` takes these options (tried on the meta device)."""
    try:
        _meta_model(name, **kwargs)
    except TypeError:
        return False
    return True


def _first_conv(model: nn.Module, cfg: dict, name: str) -> str:
    first = cfg.get("first_conv")
    if isinstance(first, (list, tuple)):
        first = first[0] if first else None
    if first:
        try:
            if isinstance(model.get_submodule(first), nn.Conv2d):
                return first
        except AttributeError:
            pass
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"backbone {name!r}: it has no 2-D convolution to take images through, so thyro cannot "
                          "feed it grey ultrasound images; choose a convolutional or vision-transformer model.")
    return convs[0]


def _head(model: nn.Module, cfg: dict, name: str) -> tuple[str, ...]:
    names = cfg.get("classifier")
    names = (names,) if isinstance(names, str) else tuple(names or ())
    found = []
    for n in names:
        try:
            module = model.get_submodule(n)
        except AttributeError:
            continue
        if any(p.ndim >= 1 for p in module.parameters()):
            found.append(n)
    if not found:
        raise ConfigError(f"backbone {name!r}: timm names no classification head with weights for it "
                          f"(pretrained_cfg classifier {cfg.get('classifier')!r}), so thyro cannot give it one logit.")
    return tuple(found)


def _cam_stage(model: nn.Module) -> str:
    info = getattr(model, "feature_info", None)
    try:
        last = info[-1]
        return last["module"] if isinstance(last, dict) else info.module_name()[-1]
    except (TypeError, KeyError, IndexError, AttributeError):
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        return convs[-1]


def _trace(model: nn.Module, first_conv: str, stage: str, size: int) -> dict:
    """One forward pass on the meta device: which BatchNorm reads the first convolution's output, the shape
    of the last feature stage's output, and (for a stage that returns several maps, as HRNet's branches do)
    the last layer before the head that returns one map."""
    conv = model.get_submodule(first_conv)
    out: dict = {"first_norm": None, "conv_out": None, "stage_shape": None, "last_map": None}
    names = {m: n for n, m in model.named_modules()}

    def after_conv(module, args, output):
        if out["conv_out"] is None:
            out["conv_out"] = output

    def before_norm(module, args):
        if out["first_norm"] is None and out["conv_out"] is not None and args and args[0] is out["conv_out"]:
            out["first_norm"] = names[module]

    def after_stage(module, args, output):
        out["stage_shape"] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    def after_child(module, args, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            out["last_map"] = (names[module], tuple(output.shape))

    hooks = [conv.register_forward_hook(after_conv), model.get_submodule(stage).register_forward_hook(after_stage)]
    hooks += [m.register_forward_pre_hook(before_norm) for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks += [m.register_forward_hook(after_child) for _, m in model.named_children()]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return {"first_norm": out["first_norm"], **_cam_choice(model, stage, out["stage_shape"], out["last_map"], size)}


def _cam_choice(model: nn.Module, stage: str, shape: tuple | None, last_map: tuple | None, size: int) -> dict:
    """The Grad-CAM layer, its output's format and the total stride, from the traced shapes."""
    if shape is None and last_map is not None:  # several maps (multi-branch): the last layer with one map
        stage, shape = last_map
    shape = shape or ()
    cam_layer, fmt = stage, "nchw"
    chs = _stage_channels(model)
    if len(shape) == 3:  # tokens (B, N, C): Grad-CAM on the last block's first norm, tokens reshaped to a grid
        fmt = "tokens"
        block = model.get_submodule(stage)
        cam_layer = f"{stage}.norm1" if isinstance(getattr(block, "norm1", None), nn.Module) else stage
        reduction = size // max(1, int((shape[1] - int(getattr(model, "num_prefix_tokens", 0) or 0)) ** 0.5))
    else:
        if len(shape) == 4 and chs is not None and shape[-1] == chs and shape[1] != chs:
            fmt = "nhwc"
        side = shape[1] if fmt == "nhwc" else (shape[-1] if shape else 1)
        reduction = size // max(1, int(side))
    return {"cam_layer": cam_layer, "cam_format": fmt, "reduction": reduction}


def _stage_channels(model: nn.Module) -> int | None:
    info = getattr(model, "feature_info", None)
    try:
        last = info[-1]
        return int(last["num_chs"] if isinstance(last, dict) else info.channels()[-1])
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
