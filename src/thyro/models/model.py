"""The model thyro trains and uses: input adapter + timm backbone + one logit."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from thyro.errors import ConfigError
from thyro.models.adapter import InputAdapter, InputSpec
from thyro.models.archs import LAYOUTS, ArchInfo, arch as arch_info, check_arch
from thyro.models.backbones import create_backbone
from thyro.models.weights.bncheck import choose_input_spec, reference_images
from thyro.models.weights.formats import Converted
from thyro.models.weights.read import read_weights
from thyro.models.weights.report import LoadReport, load_checked
from thyro.models.weights.sources import WeightSource, imagenet_tag_of, package_preprocess, parse_weight_source
from thyro.models.weights.untrained import untrained_reason
from thyro.models.weights.verify import Check, Verification, refusal, verify_positions

IN_CHANS_MODES = ("repeat", "sum")
#: Checks of mappings by position already run in this process (the same file is loaded once per job).
_CHECKED: dict[tuple, list[Check]] = {}


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
                 dropout: float = 0.0, image_size: int | None = None):
        super().__init__()
        check_arch(arch)
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
        if not isinstance(input_spec, InputSpec):
            input_spec = InputSpec.parse(input_spec, source="input_spec")
        conv = backbone.get_submodule(arch_info(arch).first_conv)
        if conv.in_channels != input_spec.channels:
            raise ConfigError(f"input_spec.channels={input_spec.channels} but the {arch} backbone's first "
                              f"convolution takes {conv.in_channels} channels.")
        self.arch = arch
        self.layout = layout
        self.dropout = float(dropout)
        #: The input size a fixed-size architecture (vision transformer) was built for; None for the others.
        self.image_size = int(image_size or arch_info(arch).native_size) if arch_info(arch).fixed_size else None
        self.input_spec = input_spec
        self.adapter = InputAdapter(input_spec)
        self.backbone = backbone
        self.metadata: dict[str, Any] = {}

    @property
    def head(self) -> nn.Module:
        """The classification head (a ``nn.Linear`` with one output)."""
        return self.backbone.get_submodule(arch_info(self.arch).head[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x)).squeeze(-1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head, ``(B, F)``."""
        feats = self.backbone.forward_features(self.adapter(x))
        return self.backbone.forward_head(feats, pre_logits=True)

    def config(self) -> dict[str, Any]:
        """What is needed to rebuild this network (JSON-ready)."""
        out = {"arch": self.arch, "layout": self.layout, "dropout": self.dropout,
               "input_spec": self.input_spec.model_dump(mode="json")}
        if self.image_size is not None:
            out["image_size"] = self.image_size
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch}, layout={self.layout}"


def build_backbone_for(arch: str, *, channels: int, layout: str = "timm", dropout: float = 0.0,
                       seed: int | None = 0, image_size: int | None = None) -> nn.Module:
    """:func:`create_backbone` in ``layout`` (``image_size`` for fixed-size architectures)."""
    return create_backbone(arch, in_chans=channels, dropout=dropout, seed=seed, layout=layout, image_size=image_size)


def build_model(arch: str = "resnet18", weights: Any = "none", *, in_chans_mode: str = "repeat",
                dropout: float = 0.0, seed: int | None = 0,
                input_spec: InputSpec | dict | None = None,
                layout: str | None = None, allow_partial: bool = False,
                image_size: int | None = None, unverified: bool = False,
                allow_untrained: bool = False) -> tuple[ThyroNet, LoadReport]:
    """Build a :class:`ThyroNet` and start it from a weight source.

    Parameters
    ----------
    arch : str
        Any architecture timm knows (:func:`thyro.models.archs.arch`).
    weights : str, dict or WeightSource
        ``"none"``, ``"imagenet"``, ``"imagenet:PATH"``, ``"radimagenet:PATH"``, ``"file:PATH"``, or
        the YAML forms ``{"imagenet": PATH}``, ``{"radimagenet": PATH}``, ``{"file": PATH}``.
    in_chans_mode : {"repeat", "sum"}
        ``"repeat"`` (default): the grey image is repeated to three channels.
        ``"sum"``: a one-channel first convolution, the source's per-channel normalisation folded
        into it and its bias or the first BatchNorm (exact away from the zero-padded border; see
        :func:`~thyro.models.weights.report.fold_input_normalisation`).
    dropout : float
        Dropout before the head.
    seed : int or None
        Seed of the random initialisation (the whole network for ``"none"``, the head otherwise).
    input_spec : InputSpec or dict, optional
        Override the preprocessing the weight source declares.
    layout : {"timm", "keras", "tf"}, optional
        Override the network layout the file implies (see :mod:`thyro.models.backbones`), e.g.
        ``"keras"`` for a PyTorch export of Keras-trained weights that no longer says so.
    allow_partial : bool
        Start from the backbone tensors the file has and leave the rest at random (an arm's
        ``partial_weights: true``); by default anything short of the whole backbone is refused.
    image_size : int, optional
        The input size, for architectures built for one size (vision transformers: their position embedding
        is resampled from the file's grid to this one); ignored by the others.
    unverified : bool
        Start from a file whose mapping by position could not be verified (:mod:`thyro.models.weights.verify`);
        the report then calls the weights unverified.  Also taken from ``weights`` when it is a
        :class:`~thyro.models.weights.sources.WeightSource` that says so.
    allow_untrained : bool
        Start from a file whose tensors look like a fresh initialisation; the report then calls them untrained.

    Returns
    -------
    (ThyroNet, LoadReport)
        The report's ``verification`` says how the file was verified.

    Raises
    ------
    WeightsError
        Missing, unsafe, corrupt or ill-fitting weight files; mappings by position that cannot be verified and
        untrained tensors, unless ``unverified`` / ``allow_untrained`` say otherwise.
    """
    _check_options(in_chans_mode, layout)
    channels = 3 if in_chans_mode == "repeat" else 1
    source = parse_weight_source(weights, arch=arch)
    path = source.resolve(arch)
    build = functools.partial(build_backbone_for, arch, channels=channels, dropout=dropout, seed=seed,
                              image_size=image_size)
    if path is None:
        if layout == "keras":
            raise ConfigError("layout 'keras' only applies to weights from Keras; weights 'none' use timm's layout.")
        layout = layout or "timm"
        backbone = build(layout=layout)
        spec = _override(input_spec) or source.default_input_spec(arch)
        report = LoadReport(source=f"none (seed {seed})", format="none", arch=arch, head_reinitialised=True,
                            notes=[f"random initialisation, seed {seed}"])
    else:
        overrides = {"unverified": unverified or source.unverified,
                     "allow_untrained": allow_untrained or source.allow_untrained}
        backbone, spec, report, layout = _start_from_file(arch, source, path, build, layout=layout,
                                                          input_spec=input_spec, allow_partial=allow_partial,
                                                          image_size=image_size, overrides=overrides)
    if input_spec is not None:
        report.notes.append("preprocessing overridden by the caller")
    spec = spec.folded() if channels == 1 else spec.as_three_channels()
    report.layout = layout
    report.input_spec = spec.model_dump(mode="json")
    model = ThyroNet(backbone, spec, arch, layout=layout, dropout=dropout, image_size=image_size)
    return model, report


def _check_options(in_chans_mode: str, layout: str | None) -> None:
    if in_chans_mode not in IN_CHANS_MODES:
        raise ConfigError(f"in_chans_mode must be one of {', '.join(IN_CHANS_MODES)}, got {in_chans_mode!r}.")
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")


def _start_from_file(arch: str, source: WeightSource, path: Path, build, *, layout: str | None,
                     input_spec: InputSpec | dict | None, allow_partial: bool, image_size: int | None,
                     overrides: dict[str, bool]) -> tuple[nn.Module, InputSpec, LoadReport, str]:
    """Read ``path``, refuse untrained tensors, load what fits and verify the mapping: ``(backbone, spec, report,
    layout)``; ``build(layout=...)`` makes the backbone."""
    info = arch_info(arch)
    with torch.device("meta"):  # the file is matched against shapes: no memory, no initialisation
        shapes = build_backbone_for(arch, channels=3, seed=None)
    conv = read_weights(path, arch, shapes)
    if layout is not None and layout != conv.layout:
        conv.notes.append(f"layout {layout!r} requested (the file implies {conv.layout!r})")
    layout = layout or conv.layout
    backbone = build(layout=layout)
    resample_position_embedding(conv, backbone)
    declared, why = _declared_spec(conv, source, info, path, backbone)
    spec = _override(input_spec) or declared
    fold = None
    if backbone.get_submodule(info.first_conv).in_channels == 1:
        (m1,), (s1,) = spec.folded().channel_mean_std()
        fold = (*spec.channel_mean_std(), (m1, s1))
    report = load_checked(backbone, conv.state, arch=arch, source=source.describe(), fmt=conv.format,
                          path=str(path), notes=conv.notes, fold=fold, allow_partial=allow_partial)
    report.mapping = conv.match.describe() if conv.match is not None else None
    untrained = untrained_reason(conv.state)
    if untrained and not overrides["allow_untrained"]:
        raise refusal(f"{path}: its tensors look untrained: {untrained}. It is not a pretrained start (for a random "
                      "start say weights 'none').", "allow_untrained")
    if report.head_reinitialised:
        zero_head(backbone, info)
        report.notes.append("new classification head starts at zero (the pretrained features are not pulled "
                            "about by a random head's gradients; timm's initialisation of a one-output head "
                            "can be far from small)")
    if why:
        report.notes.append(f"preprocessing ({why}): {declared.describe()}")
    report.verification = _verify(conv, info, path, backbone, spec.as_three_channels(), layout, image_size,
                                  untrained, overrides)
    return backbone, spec, report, layout


def _verify(conv: Converted, info: ArchInfo, path: Path, backbone: nn.Module, spec: InputSpec, layout: str,
            image_size: int | None, untrained: str | None, overrides: dict[str, bool]) -> Verification:
    """How the file's mapping is verified (:mod:`thyro.models.weights.verify`); refuses what cannot be, unless
    ``overrides["unverified"]``."""
    if conv.match is None:  # thyro's own checkpoints and Keras HDF5 files: named tensors
        stored = (conv.metadata.get("metadata") or {}).get("provenance") if conv.metadata else None
        found = Verification.from_stored(stored) if conv.metadata else Verification("keras", layout=conv.format)
    elif conv.match.how != "positions":
        found = Verification(conv.match.how, layout=conv.match.layout)
    else:
        found = Verification("positions", layout=conv.match.layout,
                             checks=_position_checks(conv, info, path, backbone, spec, layout, image_size))
    found.untrained = untrained
    if untrained:
        found.accepted.append("allow_untrained")
    if not found.verified:
        if not overrides["unverified"]:
            raise refusal(_unverified_message(conv, info, path, found), "unverified")
        found.accepted.append("unverified")
    return found


def _unverified_message(conv: Converted, info: ArchInfo, path: Path, found: Verification) -> str:
    if conv.match is None:
        return f"{path}: not verified ({found.evidence()})."
    return (f"{path}: its tensors were mapped to {info.name} by position ({conv.match.layout}), and the mapping "
            f"could not be verified: {found.evidence()}. The file is probably not a {info.name}, its tensors are "
            "not where its layout puts them, or it needs another input normalisation (input_spec); "
            "`thyro weights inspect FILE` tells more.")


def _position_checks(conv: Converted, info: ArchInfo, path: Path, backbone: nn.Module, spec: InputSpec,
                     layout: str, image_size: int | None) -> list[Check]:
    """:func:`~thyro.models.weights.verify.verify_positions` on a three-channel network holding the file's
    tensors, once per file, architecture, layout and normalisation in this process."""
    size = int(image_size) if info.fixed_size and image_size else info.native_size
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, info.name, layout, spec.model_dump_json(), size)
    if key not in _CHECKED:
        if backbone.get_submodule(info.first_conv).in_channels != 3:
            backbone = build_backbone_for(info.name, channels=3, seed=0, layout=layout, image_size=image_size)
            target = backbone.state_dict()
            backbone.load_state_dict({k: v for k, v in conv.state.items()
                                      if k in target and target[k].shape == v.shape}, strict=False)
        _CHECKED[key] = verify_positions(conv.match, conv.state, info, backbone, spec, size)
    return _CHECKED[key]


def zero_head(backbone: nn.Module, info: ArchInfo) -> None:
    """Set the classification head's weights and biases to zero."""
    with torch.no_grad():
        for name in info.head:
            for p in backbone.get_submodule(name).parameters():
                p.zero_()


def resample_position_embedding(conv: Converted, backbone: nn.Module) -> None:
    """A vision transformer's absolute position embedding from the file's patch grid to the model's (timm's
    ``resample_abs_pos_embed``, as timm does when it loads pretrained weights at another size)."""
    key = "pos_embed"
    target = backbone.state_dict().get(key)
    have = conv.state.get(key)
    if target is None or have is None or have.shape == target.shape or have.ndim != 3:
        return
    prefix = 0 if getattr(backbone, "no_embed_class", False) else int(getattr(backbone, "num_prefix_tokens", 0) or 0)
    old = int(round((have.shape[1] - prefix) ** 0.5))
    new = tuple(backbone.patch_embed.grid_size)
    conv.state[key] = resample_abs_pos_embed(have, new_size=list(new), old_size=[old, old], num_prefix_tokens=prefix)
    conv.notes.append(f"position embedding resampled from {old}x{old} to {new[0]}x{new[1]} patches")


def _declared_spec(conv: Converted, source: WeightSource, info: ArchInfo, path: Path,
                   backbone: nn.Module) -> tuple[InputSpec, str | None]:
    """The preprocessing a file needs, and why (None when the file declares it itself).

    A file that declares nothing and is neither Keras's, a timm tag's nor a known package's gets the
    architecture's ImageNet default, unless another normalisation fits its first BatchNorm's statistics
    clearly better (:func:`~thyro.models.weights.bncheck.choose_input_spec`)."""
    if conv.input_spec is not None:
        return conv.input_spec, None
    default = source.default_input_spec(info.name, conv=conv, path=path)
    if source.kind == "radimagenet" or conv.keras_origin:
        return default, "Keras preprocess_input of the architecture"
    if imagenet_tag_of(path) or package_preprocess(info.name, path):
        return default, "the file declares none; the one its source publishes"
    alternatives = [InputSpec.inception(info.native_size), InputSpec.imagenet(info.native_size)]
    candidates = [default] + [a for a in alternatives if (a.mean, a.std) != (default.mean, default.std)]
    chosen, note = choose_input_spec(conv.state, info, backbone, candidates, reference_images(info.native_size))
    if note:
        conv.notes.append(note)
        return chosen, "the file declares none; chosen by its first BatchNorm"
    return default, "the file declares none; the architecture's ImageNet default"


def _override(input_spec: InputSpec | dict | None) -> InputSpec | None:
    if input_spec is None or isinstance(input_spec, InputSpec):
        return input_spec
    return InputSpec.parse(input_spec, source="input_spec")
