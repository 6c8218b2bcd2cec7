"""The model thyro trains and uses: input adapter + timm backbone + one logit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from thyro.errors import ConfigError
from thyro.models.adapter import InputAdapter, InputSpec
from thyro.models.backbones import (
    LAYOUTS,
    apply_keras_layout,
    check_arch,
    create_backbone,
    first_conv_weight_key,
    head_name,
)
from thyro.models.weights.report import LoadReport, load_checked

IN_CHANS_MODES = ("repeat", "sum")


class ThyroNet(nn.Module):
    """Grey images in, one logit per image out.

    Parameters
    ----------
    backbone : nn.Module
        A timm model with ``num_classes=1`` (see :func:`thyro.models.create_backbone`).
    input_spec : InputSpec
        What the backbone expects; ``input_spec.channels`` must equal its input channels.
    arch : str
        Architecture name (one of :data:`thyro.models.ARCHS`).
    layout : {"timm", "keras"}
        Recorded so that a saved checkpoint rebuilds the same network.
    dropout : float
        Recorded for the same reason.

    Notes
    -----
    ``forward(x)`` takes float ``(B, 1, H, W)`` in ``[0, 1]`` (uint8 is divided by 255) and
    returns logits of shape ``(B,)``; probability = ``sigmoid(logit)``.
    """

    def __init__(self, backbone: nn.Module, input_spec: InputSpec, arch: str, *, layout: str = "timm",
                 dropout: float = 0.0):
        super().__init__()
        check_arch(arch)
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
        if not isinstance(input_spec, InputSpec):
            input_spec = InputSpec.parse(input_spec, source="input_spec")
        conv = backbone.get_submodule(first_conv_weight_key(arch)[: -len(".weight")])
        if conv.in_channels != input_spec.channels:
            raise ConfigError(f"input_spec.channels={input_spec.channels} but the {arch} backbone's first "
                              f"convolution takes {conv.in_channels} channels.")
        self.arch = arch
        self.layout = layout
        self.dropout = float(dropout)
        self.input_spec = input_spec
        self.adapter = InputAdapter(input_spec)
        self.backbone = backbone
        self.metadata: dict[str, Any] = {}

    @property
    def head(self) -> nn.Module:
        """The classification head (a ``nn.Linear`` with one output)."""
        return self.backbone.get_submodule(head_name(self.arch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x)).squeeze(-1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head, ``(B, F)``."""
        feats = self.backbone.forward_features(self.adapter(x))
        return self.backbone.forward_head(feats, pre_logits=True)

    def config(self) -> dict[str, Any]:
        """What is needed to rebuild this network (JSON-ready)."""
        return {"arch": self.arch, "layout": self.layout, "dropout": self.dropout,
                "input_spec": self.input_spec.model_dump(mode="json")}

    def extra_repr(self) -> str:
        return f"arch={self.arch}, layout={self.layout}"


def build_backbone_for(arch: str, *, channels: int, layout: str = "timm", dropout: float = 0.0,
                       seed: int | None = 0) -> nn.Module:
    """:func:`create_backbone` plus the layout change."""
    backbone = create_backbone(arch, in_chans=channels, dropout=dropout, seed=seed)
    if layout == "keras":
        apply_keras_layout(backbone, arch)
    return backbone


def build_model(arch: str = "resnet18", weights: Any = "none", *, in_chans_mode: str = "repeat",
                dropout: float = 0.0, seed: int | None = 0,
                input_spec: InputSpec | dict | None = None,
                layout: str | None = None) -> tuple[ThyroNet, LoadReport]:
    """Build a :class:`ThyroNet` and start it from a weight source.

    Parameters
    ----------
    arch : str
        One of :data:`thyro.models.ARCHS`.
    weights : str, dict or WeightSource
        ``"none"``, ``"imagenet"``, ``"imagenet:PATH"``, ``"radimagenet:PATH"``, ``"file:PATH"``, or
        the YAML forms ``{"imagenet": PATH}``, ``{"radimagenet": PATH}``, ``{"file": PATH}``.
    in_chans_mode : {"repeat", "sum"}
        ``"repeat"`` (default): the grey image is repeated to three channels.
        ``"sum"``: a one-channel first convolution, the source's per-channel normalisation folded
        into it and the first BatchNorm (exact away from the zero-padded border; see
        :func:`~thyro.models.weights.report.fold_input_normalisation`).
    dropout : float
        Dropout before the head.
    seed : int or None
        Seed of the random initialisation (the whole network for ``"none"``, the head otherwise).
    input_spec : InputSpec or dict, optional
        Override the preprocessing the weight source declares.
    layout : {"timm", "keras"}, optional
        Override the network layout the file implies (see :mod:`thyro.models.backbones`), e.g.
        ``"keras"`` for a PyTorch export of Keras-trained weights that no longer says so.

    Returns
    -------
    (ThyroNet, LoadReport)

    Raises
    ------
    WeightsError
        Missing, unsafe, corrupt or ill-fitting weight files.
    """
    from thyro.models.weights.sources import parse_weight_source

    check_arch(arch)
    if in_chans_mode not in IN_CHANS_MODES:
        raise ConfigError(f"in_chans_mode must be one of {', '.join(IN_CHANS_MODES)}, got {in_chans_mode!r}.")
    channels = 3 if in_chans_mode == "repeat" else 1
    source = parse_weight_source(weights, arch=arch)
    path = source.resolve(arch)
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    if path is None:
        if layout == "keras":
            raise ConfigError("layout 'keras' only applies to weights from Keras; weights 'none' use timm's layout.")
        backbone = build_backbone_for(arch, channels=channels, dropout=dropout, seed=seed)
        spec = _override(input_spec) or source.default_input_spec(arch)
        report = LoadReport(source=f"none (seed {seed})", format="none", arch=arch, head_reinitialised=True,
                            notes=[f"random initialisation, seed {seed}"])
        layout = "timm"
    else:
        from thyro.models.weights.formats import detect_container
        from thyro.models.weights.read import read_weights

        if detect_container(path) == "keras-h5":  # convert first: a bad file fails before any building
            from thyro.models.weights.keras_h5 import convert_keras_h5

            conv = convert_keras_h5(path, arch)
            backbone = build_backbone_for(arch, channels=channels, dropout=dropout, seed=seed)
        else:
            backbone = build_backbone_for(arch, channels=channels, dropout=dropout, seed=seed)
            conv = read_weights(path, arch, backbone)
        if layout is not None and layout != conv.layout:
            conv.notes.append(f"layout {layout!r} requested (the file implies {conv.layout!r})")
        layout = layout or conv.layout
        if layout == "keras":
            apply_keras_layout(backbone, arch)  # same tensors, Keras's strides and BatchNorm eps
        declared = conv.input_spec or source.default_input_spec(arch, conv=conv, path=path)
        spec = _override(input_spec) or declared
        fold = None
        if channels == 1:
            (m1,), (s1,) = spec.folded().channel_mean_std()
            fold = (*spec.channel_mean_std(), (m1, s1))
        report = load_checked(backbone, conv.state, arch=arch, source=source.describe(), fmt=conv.format,
                              path=str(path), notes=conv.notes, fold=fold)
        if conv.input_spec is None:
            why = ("Keras preprocess_input of the architecture" if source.kind == "radimagenet" or conv.keras_origin
                   else "the file declares none; the source's usual one")
            report.notes.append(f"preprocessing ({why}): {declared.describe()}")
    if input_spec is not None:
        report.notes.append("preprocessing overridden by the caller")
    spec = spec.folded() if channels == 1 else spec.as_three_channels()
    report.layout = layout
    report.input_spec = spec.model_dump(mode="json")
    model = ThyroNet(backbone, spec, arch, layout=layout, dropout=dropout)
    return model, report


def _override(input_spec: InputSpec | dict | None) -> InputSpec | None:
    if input_spec is None or isinstance(input_spec, InputSpec):
        return input_spec
    return InputSpec.parse(input_spec, source="input_spec")
