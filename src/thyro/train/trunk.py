"""A network cut after its first ``k`` stages: a frozen trunk whose activations are cached, and the rest that trains.

``train_backbone: cached_trunk`` with ``freeze_stages: k`` keeps the first ``k`` of timm's coarse stages
(:func:`thyro.train.recipe.stages`) frozen, as a partly frozen fine-tune does; since they never change, their
activations for each image and its mirror are computed once (:mod:`thyro.train.features`) and only the remaining
stages and the head run, forward and back, in each epoch.

A cut is found, not assumed: the modules ``forward_features`` of the timm backbone calls are recorded in call
order (a ``Sequential`` of blocks counts block by block), the trunk is the shortest run of them from the start
that holds exactly the parameters of the first ``k`` stages, extended by the parameterless modules that follow
(an activation, a pooling), and the rest is the other modules followed by the backbone's own ``forward_head``.
:func:`find_cut` then checks ``rest(trunk(x))`` against the whole network on a test input, and refuses, in one
sentence, a network whose forward is not a plain sequence of its stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from thyro.errors import ConfigError
from thyro.train.recipe import stages

#: ``rest(trunk(x))`` must give the network's logits to this tolerance (float32 on a test input).
CUT_ATOL = 1e-4


@dataclass(frozen=True)
class Cut:
    """Where a network is cut: the backbone's modules of the trunk and of the rest (dotted names, call order)."""

    stages: int
    trunk: tuple[str, ...]
    rest: tuple[str, ...]

    def trunk_module(self, model: nn.Module) -> Trunk:
        return Trunk(model, self)

    def rest_module(self, model: nn.Module) -> Rest:
        return Rest(model, self)


class Trunk(nn.Module):
    """The input adapter and the trunk's modules of ``model``: float ``(B, 1, S, S)`` to the activations."""

    def __init__(self, model: nn.Module, cut: Cut):
        super().__init__()
        self.adapter = model.adapter
        self.parts = nn.ModuleList([model.backbone.get_submodule(n) for n in cut.trunk])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.adapter(x)
        for m in self.parts:
            x = m(x)
        return x


class Rest(nn.Module):
    """The rest of ``model`` after the trunk: activations to one logit per image, as the network computes it.

    It holds (shares) the modules after the cut and those of the backbone's head; :meth:`train` also sets the
    backbone's own training flag, which its ``forward_head`` reads (dropout before the classifier).
    """

    def __init__(self, model: nn.Module, cut: Cut):
        super().__init__()
        backbone = model.backbone
        called = set(cut.trunk) | set(cut.rest)
        top = {n.split(".")[0] for n in called}
        self.parts = nn.ModuleList([backbone.get_submodule(n) for n in cut.rest])
        self.head_parts = nn.ModuleList([m for n, m in backbone.named_children() if n not in top])
        object.__setattr__(self, "_backbone", backbone)  # not a submodule: the trunk stays as it is

    def train(self, mode: bool = True) -> Rest:
        super().train(mode)
        self._backbone.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.parts:
            x = m(x)
        return self._backbone.forward_head(x).squeeze(-1)


def _flat(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, child in backbone.named_children():
        if isinstance(child, nn.Sequential):
            out += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            out.append((name, child))
    return out


@torch.no_grad()
def _call_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The backbone modules ``forward_features`` calls, in order (one entry per call)."""
    calls: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: calls.append(name))
             for name, m in _flat(model.backbone)]
    try:
        model.backbone.forward_features(model.adapter(x))
    finally:
        for h in hooks:
            h.remove()
    return calls


def _params(backbone: nn.Module, names: list[str]) -> set[str]:
    return {f"backbone.{n}.{p}" for n in names for p, _ in backbone.get_submodule(n).named_parameters()}


def find_cut(model: nn.Module, k: int, size: int) -> Cut:
    """The cut of ``model`` after its first ``k`` stages, checked on a test input of ``size`` px.

    Raises
    ------
    ConfigError
        When the network cannot be cut there (its forward is not a plain sequence of its stages, the stage
        does not end at a module, or the two parts do not give the network's output).
    """
    groups = stages(model)
    where = f"{model.arch} cannot be cut after stage {k} of {len(groups)}"
    if not 1 <= k < len(groups):
        raise ConfigError(f"freeze_stages {k}: {model.arch} has {len(groups)} stages (the last is the head); a "
                          f"cached trunk needs 1 to {len(groups) - 1}.")
    was_training = model.training
    model.eval()
    x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    try:
        calls = _call_order(model, x)
        if len(set(calls)) != len(calls):
            raise ConfigError(f"{where}: its forward calls a module more than once.")
        target = {n for g in groups[:k] for n in g}
        ends = [j for j in range(1, len(calls) + 1) if _params(model.backbone, calls[:j]) == target]
        if not ends:
            raise ConfigError(f"{where}: the stage does not end where one of its modules does.")
        cut = Cut(k, tuple(calls[:ends[-1]]), tuple(calls[ends[-1]:]))
        with torch.no_grad():
            whole = model(x)
            parted = cut.rest_module(model)(cut.trunk_module(model)(x))
        if parted.shape != whole.shape or not torch.allclose(parted, whole, atol=CUT_ATOL, rtol=CUT_ATOL):
            diff = float((parted - whole).abs().max()) if parted.shape == whole.shape else float("inf")
            raise ConfigError(f"{where}: its forward is not a plain sequence of its stages (the two parts give "
                              f"logits {diff:.2g} away from the network's).")
    finally:
        model.train(was_training)
    return cut


@torch.no_grad()
def rest_probabilities(rest: Rest, activations: np.ndarray, *, tta_flip: bool, device: torch.device,
                       batch_size: int, channels_last: bool = False) -> np.ndarray:
    """Probabilities from cached trunk activations ``(N, 2, ...)`` (each image and its mirror) through ``rest``
    in inference mode: the image's logit, or with ``tta_flip`` the mean with the mirror's."""
    rest.eval()
    out = []
    for start in range(0, len(activations), batch_size):
        block = torch.from_numpy(np.ascontiguousarray(activations[start:start + batch_size])).to(device)
        views = [block[:, 0], block[:, 1]] if tta_flip else [block[:, 0]]
        if channels_last and block.dim() == 5:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        logits = [rest(v).float().reshape(len(block)) for v in views]
        logit = 0.5 * (logits[0] + logits[1]) if tta_flip else logits[0]
        out.append(torch.sigmoid(logit).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


__all__ = ["CUT_ATOL", "Cut", "Rest", "Trunk", "find_cut", "rest_probabilities"]
