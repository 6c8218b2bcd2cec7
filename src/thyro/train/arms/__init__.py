"""How an arm is fitted and how its epoch is selected: small strategies, chosen once when the plan is made.

Each :class:`~thyro.train.plan.ArmPlan` holds a :class:`Fitter` (from the arm's ``train_backbone``) and a
:class:`Selection` (from ``train.selection``); a job calls them and tests no setting itself.

Fitters
-------
:class:`FineTune`
    the training loop (:func:`thyro.train.fit.fit`), over the recipe's trainable stages
    (``train_backbone``: ``all``, ``none`` or ``bn``; :mod:`thyro.train.recipe`).
:class:`CachedProbe`
    a linear probe on cached features (``train_backbone: cached``; :mod:`thyro.train.probe`): no epochs,
    so nothing to select or tune; it chooses its own L2 strength on inner folds of the training part.
:class:`CachedTrunk`
    a fine-tune of the stages after a frozen, cached trunk (``train_backbone: cached_trunk`` with
    ``freeze_stages: k``; :mod:`thyro.train.trunk_fit`).

A new way of fitting is one subclass of :class:`Fitter` that names its ``train_backbone`` value in
``modes`` (the subclass registers itself) plus that value in :class:`thyro.config.ArmConfig`'s ``Literal``.

Selections
----------
:class:`LastEpoch` (``last``), :class:`InnerSplit` (``inner``) and :class:`HeldOutFold` (``oof``): which
images train, which choose the epoch, whether the best epoch is kept, and the sentence that describes the
choice in the run's record and report.  The inner split (a group-respecting share of the training part) is
made when the selection or tuning (``train.tune``) needs it.
"""

from thyro.train.arms.fitters import CachedProbe, CachedTrunk, FineTune, FitRequest, Fitter
from thyro.train.arms.selection import HeldOutFold, Images, InnerSplit, LastEpoch, Parts, Scored, Selection

__all__ = ["CachedProbe", "CachedTrunk", "FineTune", "FitRequest", "Fitter", "HeldOutFold", "Images", "InnerSplit",
           "LastEpoch", "Parts", "Scored", "Selection"]
