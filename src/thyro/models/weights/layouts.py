"""Checkpoints recognised by their structure: which tensors of a file are which tensors of a backbone.

A weight file names its tensors the way the code that saved it named its modules.  :func:`match_state`
finds, for one timm architecture, the reading of a file that covers most of the backbone:

1. **Wrappers and self-supervised prefixes.**  Every key under a known prefix is tried as the backbone:
   ``module.`` (DataParallel/DDP), ``_orig_mod.`` (``torch.compile``), ``model.`` (Lightning),
   ``encoder_q.`` (MoCo's query encoder, not its momentum copy), ``base_encoder.`` (MoCo v3),
   ``teacher.``/``student.`` (DINO: the teacher first, as DINO evaluates it), ``backbone.``/``encoder.``
   (SimCLR and most SSL code), nested up to three deep (``module.encoder_q.``).  Tensors outside the
   chosen prefix (momentum encoders, projection heads, the other DINO network) are left out and listed.
2. **Names.**  timm's names, which torchvision's share for the families both have; torchvision's legacy
   DenseNet names; Keras-converted files whose convolutions kept a bias (folded exactly into the
   following BatchNorm).
3. **An ``nn.Sequential`` of the network's children** (RadImageNet's PyTorch export ``backbone.N``,
   MONAI's ``features.N``), renamed through the target network's children.
4. **Positions.**  Where names differ but the file's tensors, in the order they were saved, have exactly
   the shapes of the backbone's tensors in module order (``num_batches_tracked`` counters left out, a
   trailing classifier of the file left over), tensor *i* of the file is tensor *i* of the backbone.
   ``efficientnet_pytorch``'s layout (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``) is read
   so, its tensors first put in that code's module order by their names (so the order a file was saved in
   does not matter); that code pads as TensorFlow does, so its files run in the ``tf`` layout.  A mapping
   by position is verified (:mod:`thyro.models.weights.verify`) before anyone trusts it.

The result (:class:`Match`) says which layout it found, how tensors were mapped, the coverage
(backbone tensors matched / expected) and the file's tensors that found no place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from thyro.models.archs import ArchInfo
from thyro.models.known import recognise_state

#: Known wrapper and self-supervised prefixes, in order of preference where a file holds several.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("module.", "DataParallel/DDP"),
    ("_orig_mod.", "torch.compile"),
    ("model.", "Lightning/wrapped model"),
    ("encoder_q.", "MoCo query encoder"),
    ("base_encoder.", "MoCo v3 base encoder"),
    ("teacher.", "DINO teacher"),
    ("student.", "DINO student"),
    ("backbone.", "SSL backbone (SimCLR and others)"),
    ("encoder.", "SSL encoder"),
    ("net.", "wrapped network"),
)
#: Keys no backbone needs (BatchNorm counters, Inception's auxiliary classifier).
IGNORABLE_SUFFIXES = ("num_batches_tracked",)
IGNORABLE_PREFIXES = ("AuxLogits.",)
#: A file's leftover tensors after a positional match that may be its own classifier.
MAX_FILE_HEAD = 4

_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
#: Prefixes of ``nn.Sequential`` exports of a network's children: RadImageNet's ``backbone.N``, MONAI's
#: ``TorchVisionFCModel``/``NetAdapter`` ``features.N`` (with its own ``fc`` head beside it), or bare ``N``.
SEQUENTIAL_PREFIXES = ("backbone.", "features.", "")
#: Head tensors a Sequential export may carry beside its body (MONAI's ``fc``).
SEQUENTIAL_HEADS = ("fc.", "classifier.")


def ignorable(key: str) -> bool:
    """Keys no backbone needs (BatchNorm counters, auxiliary classifiers)."""
    return key.endswith(IGNORABLE_SUFFIXES) or key.startswith(IGNORABLE_PREFIXES)


@dataclass
class Match:
    """One reading of a file for one architecture.

    Attributes
    ----------
    state : dict
        The file's tensors under the backbone's names (head tensors of the file included where they fit).
    layout : str
        What the file's naming was recognised as (``timm/torchvision names``, ``efficientnet_pytorch``, ...).
    how : {"names", "sequential", "positions"}
    prefix : str
        The wrapper/SSL prefix removed (``""`` for none).
    wrapper : str
        What that prefix stands for (``"MoCo query encoder"``), or ``""``.
    matched, expected : int
        Backbone tensors (head and counters left out) set from the file / in the backbone.
    unmatched : list of str
        The file's tensors (original names) that found no place, the classification head's excepted.
    left_out : list of str
        Tensors outside the chosen prefix (momentum encoders, projection heads, ...).
    net_layout : str
        The network layout the file implies (``tf`` for ``efficientnet_pytorch``'s files).
    notes : list of str
    source : dict
        The file's tensors under their own names (the prefix removed): what a reference implementation loads.
    """

    state: dict[str, torch.Tensor]
    layout: str
    how: str
    prefix: str = ""
    wrapper: str = ""
    matched: int = 0
    expected: int = 0
    unmatched: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    net_layout: str = "timm"
    notes: list[str] = field(default_factory=list)
    #: The file's tensors as they were read (under their own names, the prefix removed).
    source: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def coverage(self) -> float:
        return self.matched / self.expected if self.expected else 0.0

    @property
    def complete(self) -> bool:
        return self.expected > 0 and self.matched == self.expected

    def describe(self) -> str:
        """One line: layout, prefix, mapping, coverage."""
        how = {"names": "by name", "sequential": "by the network's children", "positions": "by position"}[self.how]
        pre = f"{self.wrapper} ({self.prefix}), " if self.prefix else ""
        return (f"{pre}{self.layout}, mapped {how}: {self.matched}/{self.expected} backbone tensors "
                f"({100 * self.coverage:.0f} %)")


def backbone_keys(info: ArchInfo, model_state: dict[str, torch.Tensor]) -> list[str]:
    """The backbone's tensors in module order, the head and counters left out."""
    return [k for k in model_state if not ignorable(k) and not info.is_head_key(k)]


def candidates(tensors: dict[str, torch.Tensor], depth: int = 3) -> list[tuple[str, str, dict[str, torch.Tensor]]]:
    """``(prefix, wrapper description, sub-dict with the prefix removed)`` for the whole file and for every
    known prefix present, nested up to ``depth`` prefixes."""
    out = [("", "", tensors)]
    frontier = [("", "", tensors)]
    for _ in range(depth):
        nxt = []
        for prefix, what, state in frontier:
            for p, name in PREFIXES:
                sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
                if len(sub) >= 2:
                    nxt.append((prefix + p, (what + " > " if what else "") + name, sub))
        out += nxt
        frontier = nxt
    return out


def fix_densenet_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's old DenseNet files name ``norm.1`` what is now ``norm1``."""
    return {_DENSENET_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}


def _score(info: ArchInfo, state: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> int:
    return sum(1 for k in backbone_keys(info, model_state)
               if k in state and tuple(state[k].shape) == tuple(model_state[k].shape))


def _finish(match: Match, info: ArchInfo, model_state: dict[str, torch.Tensor],
            original: dict[str, str]) -> Match:
    """Fill coverage and the unmatched list (file names) of a match."""
    keys = backbone_keys(info, model_state)
    match.expected = len(keys)
    match.matched = _score(info, match.state, model_state)
    match.unmatched = [original.get(k, k) for k, v in match.state.items()
                       if not ignorable(k) and not info.is_head_key(k)
                       and (k not in model_state or tuple(model_state[k].shape) != tuple(v.shape))]
    return match


def sequential_prefix(state: dict[str, torch.Tensor]) -> str | None:
    """The prefix of an ``nn.Sequential`` export (``backbone.``, ``features.`` or ``""``), or None.

    Every key but a head's (``fc.*``, ``classifier.*``) must read ``PREFIX<index>.rest``.
    """
    for prefix in SEQUENTIAL_PREFIXES:
        body = [k for k in state if not k.startswith(SEQUENTIAL_HEADS)]
        if body and all(k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit() for k in body):
            return prefix
    return None


def _sequential_candidates(model: torch.nn.Module) -> list[list[str]]:
    """Child-name lists the indices of a Sequential export may refer to."""
    top = [name for name, _ in model.named_children()]
    cands = [top]
    if "Mixed_6e" in top and "AuxLogits" not in top:  # torchvision's Inception3 has AuxLogits here
        i = top.index("Mixed_6e") + 1
        cands.append(top[:i] + ["AuxLogits"] + top[i:])
    for name, child in model.named_children():
        sub = [n for n, _ in child.named_children()]
        if isinstance(child, torch.nn.Sequential) and len(sub) > 3 and not all(s.isdigit() for s in sub):
            cands.append([f"{name}.{s}" for s in sub])
    return cands


def map_sequential(state: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """Rename ``PREFIX.N.rest`` keys to the target network's module names, choosing the best fit; head
    keys (``fc.*``) are kept as they are."""
    model_state = model.state_dict()
    prefix = sequential_prefix(state) or ""
    best: tuple[int, dict[str, torch.Tensor], str] = (-1, state, "")
    for names in _sequential_candidates(model):
        out = {}
        for k, v in state.items():
            if k.startswith(SEQUENTIAL_HEADS):
                out[k] = v
                continue
            i, _, rest = k[len(prefix):].partition(".")
            idx = int(i)
            out[f"{names[idx]}.{rest}" if idx < len(names) else k] = v
        score = sum(1 for k, v in out.items() if k in model_state and model_state[k].shape == v.shape)
        if score > best[0]:
            best = (score, out, ", ".join(f"{i}={n}" for i, n in enumerate(names[:8])))
    return best[1], best[2]


def map_positions(state: dict[str, torch.Tensor], info: ArchInfo,
                  model_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """Tensor *i* of the file (in saved order, counters left out) is backbone tensor *i* when every shape
    agrees; at most :data:`MAX_FILE_HEAD` trailing tensors of the file (its classifier) are left over and
    offered to the head (kept under their own names when they are not one).  None when the shapes do not
    line up."""
    keys = backbone_keys(info, model_state)
    items = [(k, v) for k, v in state.items() if not ignorable(k)]
    if len(items) < len(keys) or len(items) - len(keys) > MAX_FILE_HEAD:
        return None
    if any(tuple(v.shape) != tuple(model_state[k].shape) for (_, v), k in zip(items, keys)):
        return None
    out = {k: v for (_, v), k in zip(items, keys)}
    original = {k: src for (src, _), k in zip(items, keys)}
    rest = items[len(keys):]
    heads = [k for k in model_state if info.is_head_key(k)]
    if rest and len(rest) == len(heads) and all(v.ndim == model_state[h].ndim for (_, v), h in zip(rest, heads)):
        for (src, v), h in zip(rest, heads):  # the file's classifier, offered to ours (it fits only if same size)
            out[h] = v
            original[h] = src
    else:
        out.update(rest)  # no place for them: listed as unmatched
    return out, original


def _is_efficientnet_pytorch(state: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


#: ``efficientnet_pytorch``'s module order: the network's modules, a block's modules, a module's tensors.
_EP_TOP = {"_conv_stem": 0, "_bn0": 1, "_blocks": 2, "_conv_head": 3, "_bn1": 4, "_fc": 5}
_EP_BLOCK = ("_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_se_reduce", "_se_expand", "_project_conv", "_bn2")
_EP_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_EP_KEY = re.compile(r"^(?:_blocks\.(?P<block>\d+)\.(?P<sub>\w+)|(?P<top>_\w+))\.(?P<tensor>\w+)$")


def efficientnet_pytorch_order(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state`` in ``efficientnet_pytorch``'s module order, found from its names (the order the file was saved in
    does not matter), or None when a name is not one of that layout's."""
    ranked = []
    for key in state:
        m = _EP_KEY.match(key)
        if m is None or m["tensor"] not in _EP_TENSORS:
            return None
        if m["block"] is not None:
            if m["sub"] not in _EP_BLOCK:
                return None
            rank = (_EP_TOP["_blocks"], int(m["block"]), _EP_BLOCK.index(m["sub"]))
        elif m["top"] in _EP_TOP and m["top"] != "_blocks":
            rank = (_EP_TOP[m["top"]], 0, 0)
        else:
            return None
        ranked.append((rank + (_EP_TENSORS.index(m["tensor"]),), key))
    return {key: state[key] for _, key in sorted(ranked)}


def match_state(tensors: dict[str, torch.Tensor], info: ArchInfo, model: torch.nn.Module) -> Match:
    """The reading of ``tensors`` that covers most of ``info``'s backbone (``model`` is that backbone).

    Ties go to names over positions and to the shorter prefix.  The returned match may be incomplete:
    the caller decides (loading refuses partial coverage unless asked for it).
    """
    model_state = model.state_dict()
    best: Match | None = None

    def rank(m: Match) -> tuple:
        left_out = sum(1 for k in tensors if not k.startswith(m.prefix) and not ignorable(k))
        return m.matched, m.how == "names", m.layout != "other names", -len(m.unmatched) - left_out, -len(m.prefix)

    def consider(m: Match) -> None:
        nonlocal best
        if best is None or rank(m) > rank(best):
            best = m

    for prefix, what, state in candidates(tensors):
        if _is_efficientnet_pytorch(state):
            ordered = efficientnet_pytorch_order(state)
            mapped = map_positions(ordered if ordered is not None else state, info, model_state)
            if mapped is not None:
                notes = ["efficientnet_pytorch pads as TensorFlow does ('same', BatchNorm eps 1e-3): tf layout"]
                if ordered is not None and list(ordered) != list(state):
                    notes.append("tensors put in efficientnet_pytorch's module order by their names (the file saved "
                                 "them in another order)")
                consider(_finish(Match(mapped[0], "efficientnet_pytorch", "positions", prefix, what, net_layout="tf",
                                       notes=notes, source=state), info, model_state, mapped[1]))
                continue
        named = fix_densenet_legacy(state)
        consider(_finish(Match(named, "timm/torchvision names", "names", prefix, what, source=state), info, model_state,
                         {k2: k1 for k1, k2 in zip(state, named)}))
        if sequential_prefix(state) is not None:
            renamed, how = map_sequential(state, model)
            layout = ("MONAI TorchVisionFCModel (features.N, nn.Sequential)"
                      if sequential_prefix(state) == "features." else "RadImageNet PyTorch export (nn.Sequential)")
            consider(_finish(Match(renamed, layout, "sequential", prefix, what, source=state,
                                   notes=[f"Sequential indices mapped to module names ({how}, ...)"]),
                             info, model_state, {}))
        if best is None or not best.complete:
            mapped = map_positions(state, info, model_state)
            if mapped is not None:
                consider(_finish(Match(mapped[0], "other names", "positions", prefix, what, source=state), info,
                                 model_state, mapped[1]))
    assert best is not None
    if best.prefix:
        best.left_out = [k for k in tensors if not k.startswith(best.prefix)]
        best.notes.insert(0, f"{best.wrapper}: prefix {best.prefix} removed"
                          + (f"; {len(best.left_out)} tensor(s) outside it left out" if best.left_out else ""))
    if best.how == "positions":
        best.notes.append("names differ from timm's: tensors mapped by their order and shapes")
    return best


def recognise_known(state: dict[str, torch.Tensor]) -> str | None:
    """The hand-kept recognisers' verdict on a timm-named state dict (five architectures), or None."""
    return recognise_state(set(fix_densenet_legacy(state)))


__all__ = ["IGNORABLE_PREFIXES", "IGNORABLE_SUFFIXES", "Match", "PREFIXES", "SEQUENTIAL_HEADS", "backbone_keys",
           "candidates", "efficientnet_pytorch_order", "fix_densenet_legacy", "ignorable", "map_positions", "map_sequential",
           "match_state", "recognise_known", "sequential_prefix"]
