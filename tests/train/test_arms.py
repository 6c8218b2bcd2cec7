"""How an arm is fitted and how its epoch is selected are types the plan chooses once (thyro.train.arms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from thyro.config import StudyConfig
from thyro.errors import ConfigError
from thyro.run import JobKey
from thyro.train.arms import CachedProbe, FineTune, Fitter, HeldOutFold, InnerSplit, LastEpoch, Parts, Selection
from thyro.train.fit import ArraySet
from thyro.train.plan import ArmPlan


def _study(**train) -> StudyConfig:
    return StudyConfig.parse({"data": {"manifest": "m.csv"}, "train": {"tune": {"lr": [0.01, 0.001]}, **train},
                              "arms": [{"name": "ft", "train_backbone": "all"}, {"name": "bn", "train_backbone": "bn"},
                                       {"name": "probe", "train_backbone": "cached"}]})


@pytest.mark.parametrize("selection, kind, best, inner", [("last", LastEpoch, False, False),
                                                          ("inner", InnerSplit, True, True),
                                                          ("oof", HeldOutFold, True, False)])
def test_the_plan_chooses_the_fitter_and_the_selection_once(selection, kind, best, inner):
    cfg = _study(selection=selection)
    ft, bn, probe = (ArmPlan.of(arm, cfg.train, Path(".")) for arm in cfg.arms)
    assert type(ft.fitter) is FineTune and ft.fitter.mode == "all" and bn.fitter.mode == "bn"
    assert type(ft.selection) is kind and ft.selection.select_best is best and ft.selection.needs_inner is inner
    assert ft.needs_inner_split  # tuning needs the inner split whatever the selection
    # the probe has no epochs: nothing to select or tune, whatever the study says
    assert type(probe.fitter) is CachedProbe and type(probe.selection) is LastEpoch
    assert probe.train.selection == "last" and not probe.train.tune.grid and not probe.needs_inner_split
    assert "linear probe" in probe.selection.describe(Parts(*[ArraySet(np.zeros((0, 4, 4), np.uint8), [])] * 3))
    assert probe.fitter.epochs(probe.train) == 1 and ft.fitter.epochs(ft.train) == ft.train.epochs


class _Images:
    """Ten patients, two images each, alternating labels."""

    ids = [f"p{i // 2}-{i % 2}" for i in range(20)]

    def arrays(self, ids):
        return ArraySet(np.zeros((len(ids), 4, 4), np.uint8), [int(i[1:].split("-")[0]) % 2 for i in ids], list(ids))

    def labels(self, ids):
        return np.array([int(i[1:].split("-")[0]) % 2 for i in ids])

    def groups(self, ids):
        return [i.split("-")[0] for i in ids]


def test_each_selection_trains_and_chooses_on_its_own_images():
    images, cfg = _Images(), _study().train.model_copy(update={"inner_fraction": 0.25})
    train_ids, val_ids, job = images.ids[:16], images.ids[16:], JobKey("ft", 0)
    last = LastEpoch().parts(images, train_ids, val_ids, cfg, job)
    assert last.train.ids == train_ids and last.chooser is last.val and last.inner is None
    oof = HeldOutFold().parts(images, train_ids, val_ids, cfg, job, tuning=True)
    assert oof.train.ids == train_ids and oof.chooser.ids == val_ids and oof.inner is not None
    inner = InnerSplit().parts(images, train_ids, val_ids, cfg, job)
    fit_part, select_part = inner.inner
    assert inner.train is fit_part and inner.chooser is select_part and inner.val.ids == val_ids
    assert sorted(fit_part.ids + select_part.ids) == sorted(train_ids)
    assert not {i.split("-")[0] for i in fit_part.ids} & {i.split("-")[0] for i in select_part.ids}  # patients
    assert f"({len(select_part.ids)} images held out)" in InnerSplit().describe(inner)
    assert "selection-biased" in HeldOutFold().describe(oof) and "last epoch" in LastEpoch().describe(last)


def test_a_new_way_of_fitting_is_one_class_found_by_its_mode():
    with pytest.raises(ConfigError, match="train_backbone 'cached-trunk'"):
        Fitter.for_mode("cached-trunk")

    class CachedTrunk(FineTune):
        modes = ("cached-trunk",)

    class Tweaked(FineTune):  # a subclass that names no value takes none of its parent's
        pass

    try:
        assert type(Fitter.for_mode("cached-trunk")) is CachedTrunk
        assert type(Fitter.for_mode("all")) is FineTune  # the others stay as they were
    finally:
        Fitter._by_mode.pop("cached-trunk")
    assert type(Selection.named("inner")) is InnerSplit
    with pytest.raises(ConfigError, match="train.selection 'best'"):
        Selection.named("best")


def test_the_plan_says_which_augmentations_a_cached_arm_leaves_out():
    from thyro.config.training import TrainConfig

    default = TrainConfig()
    assert Fitter.for_mode("all").notes(default) == [] and Fitter.for_mode("none").notes(default) == []
    for mode in ("cached", "cached_trunk"):
        note = Fitter.for_mode(mode).notes(default)
        assert len(note) == 1 and f"'{mode}' augments by the mirror alone" in note[0]
        assert "rotation, zoom, shift, brightness, contrast, gamma, speckle do not apply" in note[0]
    some = TrainConfig.model_validate({"augment": {"rotate_deg": 0, "scale": [1.0, 1.0], "translate": 0,
                                                   "brightness": 0, "contrast": 0, "gamma": 0, "vflip": 0.5}})
    assert "vertical flip, speckle do not apply" in Fitter.for_mode("cached_trunk").notes(some)[0]
    mirror = some.model_copy(update={"augment": some.augment.model_copy(update={"vflip": 0.0, "speckle": 0.0})})
    assert Fitter.for_mode("cached").notes(mirror) == []  # the mirror alone: nothing left out, nothing said
    off = TrainConfig.model_validate({"augment": {"enabled": False}})
    assert Fitter.for_mode("cached_trunk").notes(off) == []
