"""Speed of thyro.stats: DeLong on 100,000 cases, the cluster bootstrap (2,000 x 1,000).

Run:  OMP_NUM_THREADS=1 python benchmarks/stats_speed.py [--repeats 7]

Prints medians over repeats, and ratios against baselines measured in the same run:
scikit-learn's roc_auc_score (a point AUROC, no variance) and a plain loop of resample-and-score.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from thyro.stats import auroc_ci, bootstrap_auroc, bootstrap_paired, delong_paired


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    n = 100_000
    y = rng.integers(0, 2, n)
    s1 = np.round(rng.normal(size=n) + y, 3)
    s2 = np.round(s1 + rng.normal(size=n), 3)
    t_sk = median_time(lambda: roc_auc_score(y, s1), args.repeats)
    t_ci = median_time(lambda: auroc_ci(y, s1), args.repeats)
    t_pair = median_time(lambda: delong_paired(y, s1, s2), args.repeats)
    print(f"DeLong AUROC + CI, {n:,} cases:        {t_ci * 1e3:8.1f} ms  (sklearn roc_auc_score, no CI: {t_sk * 1e3:.1f} ms; ratio {t_ci / t_sk:.2f})")
    print(f"DeLong paired test, {n:,} cases:       {t_pair * 1e3:8.1f} ms")

    m, b = 1_000, 2_000
    y = rng.integers(0, 2, m)
    s1 = rng.normal(size=m) + y
    s2 = s1 + rng.normal(size=m)
    patients = np.repeat(np.arange(m // 2), 2)  # two images per patient
    t_boot = median_time(lambda: bootstrap_auroc(y, s1, patients, n_boot=b, seed=1), args.repeats)
    t_bpair = median_time(lambda: bootstrap_paired(y, s1, s2, patients, n_boot=b, seed=1), args.repeats)

    naive_b = 200  # the loop is slow: time 200 resamples and scale to 2,000

    def naive():
        r = np.random.default_rng(1)
        ids = np.unique(patients)
        for _ in range(naive_b):
            pick = r.choice(ids, ids.size)
            idx = (pick[:, None] * 2 + np.array([0, 1])).ravel()
            roc_auc_score(y[idx], s1[idx])

    t_naive = median_time(naive, 3) * b / naive_b
    print(f"cluster bootstrap AUROC CI, {b:,} x {m:,}: {t_boot * 1e3:8.1f} ms  (loop of resample + sklearn roc_auc_score, scaled from 200: {t_naive * 1e3:.0f} ms; speed-up {t_naive / t_boot:.0f}x)")
    print(f"cluster bootstrap paired difference, {b:,} x {m:,}: {t_bpair * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
