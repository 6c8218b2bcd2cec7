#!/usr/bin/env Rscript
# Reference values for thyro.stats.power (thyro power) from R's pROC power.roc.test, two paired ROC
# curves given by their binormal parameters (B = 1, A = sqrt(2) qnorm(AUROC)).
#
# Usage: Rscript tests/stats/power_reference.R   (prints "case quantity value" lines, 17 significant digits)
# tests/stats/test_power.py pins these values and, when Rscript and pROC are installed, runs this
# script again and compares.
suppressPackageStartupMessages(library(pROC))
a <- function(auc) sqrt(2) * qnorm(auc)
pars <- function(ref, alt, rn, ra) list(A1 = a(ref), B1 = 1, A2 = a(alt), B2 = 1, rn = rn, ra = ra, delta = alt - ref)
put <- function(case, q, v) cat(sprintf("%s %s %.17g\n", case, q, v))

# 1. the reference study's design: scratch 0.69 vs RadImageNet 0.83, r = 0.5, 35% malignant, 80% power
r <- power.roc.test(pars(0.69, 0.83, 0.5, 0.5), power = 0.8, kappa = 0.65 / 0.35)
put("jacr_80", "ncases", r$ncases); put("jacr_80", "ncontrols", r$ncontrols)
# 2. a small gain: 0.75 vs 0.80, r = 0.6, 30% malignant, 90% power
r <- power.roc.test(pars(0.75, 0.80, 0.6, 0.6), power = 0.9, kappa = 0.7 / 0.3)
put("small_90", "ncases", r$ncases); put("small_90", "ncontrols", r$ncontrols)
# 3. power at given sizes (the reference study's test set), correlations differing by class
r <- power.roc.test(pars(0.79, 0.83, 0.7, 0.6), ncases = 35, ncontrols = 66)
put("test101", "power", r$power)
