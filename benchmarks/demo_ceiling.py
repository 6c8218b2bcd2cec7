"""What the demo's arms could reach at most on the external phantom set, from a finished ``thyro demo``.

Three ceilings, each on the external set of new patients:

* the best achievable AUROC: the phantom's known malignancy probabilities (the Bayes-optimal score);
* perfect features, learnt weights: a logistic regression on the true TI-RADS features (one-hot),
  fitted on the labels of the development images the study trains on (test set left out), as a
  backbone that encoded every feature perfectly would still have to learn how much each one weighs
  from the cohort's few labelled patients;
* the same with every development patient's label (test set included).

    python benchmarks/demo_ceiling.py thyro-demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegressionCV

from thyro.run import RunDir
from thyro.stats import auroc

FEATURES = ["composition", "echogenicity", "shape", "margin", "foci"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", type=Path, help="the demo's folder (thyro demo --out)")
    args = ap.parse_args()
    dev = pd.read_csv(args.demo / "phantom" / "manifest.csv")
    ext = pd.read_csv(args.demo / "external" / "manifest.csv")
    run = RunDir(args.demo / "run")
    test = set(run.read_splits().test)
    x = pd.get_dummies(pd.concat([dev[FEATURES], ext[FEATURES]]).astype(str)).to_numpy(float)
    xd, xe = x[:len(dev)], x[len(dev):]
    rows = [("known malignancy probabilities (best achievable)", auroc(ext["label"], ext["p_malignant"]), "-")]
    for what, keep in (("the development images the study trains on", ~dev["image"].isin(test)),
                       ("all cohort images", np.ones(len(dev), dtype=bool))):
        clf = LogisticRegressionCV(Cs=10, cv=5, scoring="roc_auc", max_iter=5000).fit(xd[keep], dev["label"][keep])
        rows.append((f"true features, weights fitted on {what}", auroc(ext["label"], clf.decision_function(xe)),
                     f"{dev['patient_id'][keep].nunique()} patients"))
    for arm, r in run.read_results().arms.items():
        rows.append((f"arm {arm} (fold-mean ensemble)", r.external_auroc["new-patients"], "the study"))
    print(f"| external set ({len(ext)} images, {ext['patient_id'].nunique()} patients) | AUROC | trained on |")
    print("| --- | ---: | --- |")
    for what, a, n in rows:
        print(f"| {what} | {a:.3f} | {n} |")


if __name__ == "__main__":
    main()
