#!/usr/bin/env Rscript
# Reference values for thyro.stats.roc from R's pROC.
#
# Usage: Rscript tests/stats/proc_reference.R [SCENARIOS.csv] [OUT.csv]   (OUT defaults to standard output)
#
# If SCENARIOS.csv does not exist it is created from seeded random scenarios (set.seed below),
# with and without tied scores.  OUT.csv gets one row per (scenario, quantity) with 17 significant
# digits.  tests/stats/test_proc.py pins these values and, when Rscript and pROC are installed,
# re-runs this script and compares again.
suppressPackageStartupMessages(library(pROC))

args <- commandArgs(trailingOnly = TRUE)
here <- tryCatch(dirname(normalizePath(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE)))),
                 error = function(e) ".")
scen_path <- if (length(args) >= 1) args[1] else file.path(here, "data", "proc_scenarios.csv")
out_path <- if (length(args) >= 2) args[2] else ""  # "" = standard output

make_scenarios <- function() {
  set.seed(20240611)
  rows <- list()
  add <- function(name, y, s1, s2) {
    rows[[length(rows) + 1]] <<- data.frame(scenario = name, label = y, s1 = s1, s2 = s2)
  }
  # 1. continuous scores, no ties, n = 60
  y <- rbinom(60, 1, 0.4); add("continuous_n60", y, rnorm(60) + 1.0 * y, rnorm(60) + 0.5 * y)
  # 2. test-set sized (101 cases), scores rounded to 0.1 -> many ties, correlated models
  y <- rbinom(101, 1, 0.35); z <- rnorm(101)
  add("ties_n101", y, round(z + 1.2 * y, 1), round(0.6 * z + rnorm(101, sd = 0.8) + 0.6 * y, 1))
  # 3. ordinal ratings 1..5 (heavy ties)
  y <- rbinom(80, 1, 0.5)
  add("ratings_n80", y, pmin(5, pmax(1, round(3 + y + rnorm(80)))), pmin(5, pmax(1, round(3 + 0.5 * y + rnorm(80)))))
  # 4. below-chance model (AUROC < 0.5 must stay < 0.5)
  y <- rbinom(70, 1, 0.5); add("below_chance_n70", y, rnorm(70) - 0.8 * y, rnorm(70) + 0.8 * y)
  # 5. unbalanced: few malignant cases, probabilities in (0, 1)
  y <- c(rep(1, 12), rep(0, 188)); add("unbalanced_n200", y, plogis(rnorm(200) + 1.5 * y), plogis(rnorm(200) + 0.7 * y))
  # 6. probabilities rounded to 2 decimals, larger n
  y <- rbinom(500, 1, 0.3); z <- rnorm(500)
  add("rounded_n500", y, round(plogis(z + y), 2), round(plogis(0.5 * z + rnorm(500) + 0.9 * y), 2))
  do.call(rbind, rows)
}

if (!file.exists(scen_path)) {
  dir.create(dirname(scen_path), showWarnings = FALSE, recursive = TRUE)
  sc <- make_scenarios()
  write.csv(transform(sc, s1 = sprintf("%.17g", s1), s2 = sprintf("%.17g", s2)), scen_path, row.names = FALSE, quote = FALSE)
}
sc <- read.csv(scen_path)

out <- data.frame(scenario = character(), quantity = character(), value = character())
put <- function(name, q, v) {
  out[nrow(out) + 1, ] <<- list(name, q, sprintf("%.17g", as.numeric(v)))
}
names_ <- unique(sc$scenario)
rocs <- list()
for (name in names_) {
  d <- sc[sc$scenario == name, ]
  r1 <- roc(d$label, d$s1, levels = c(0, 1), direction = "<", quiet = TRUE)
  r2 <- roc(d$label, d$s2, levels = c(0, 1), direction = "<", quiet = TRUE)
  rocs[[name]] <- list(r1 = r1, r2 = r2)
  put(name, "auc1", auc(r1)); put(name, "auc2", auc(r2))
  put(name, "var1", var(r1, method = "delong")); put(name, "var2", var(r2, method = "delong"))
  put(name, "cov12", cov(r1, r2, method = "delong"))
  ci1 <- ci.auc(r1, method = "delong"); put(name, "ci1_lower", ci1[1]); put(name, "ci1_upper", ci1[3])
  ci2 <- ci.auc(r2, method = "delong", conf.level = 0.9); put(name, "ci2_90_lower", ci2[1]); put(name, "ci2_90_upper", ci2[3])
  t <- roc.test(r1, r2, method = "delong", paired = TRUE)
  put(name, "paired_z", t$statistic); put(name, "paired_p", t$p.value)
  put(name, "paired_ci_lower", t$conf.int[1]); put(name, "paired_ci_upper", t$conf.int[2])
}
# unpaired tests: model 1 of one scenario against model 1 of the next one (different cases)
for (i in seq_along(names_)) {
  a <- names_[i]; b <- names_[(i %% length(names_)) + 1]
  t <- roc.test(rocs[[a]]$r1, rocs[[b]]$r1, method = "delong", paired = FALSE)
  put(paste0(a, "|", b), "unpaired_d", t$statistic); put(paste0(a, "|", b), "unpaired_df", t$parameter)
  put(paste0(a, "|", b), "unpaired_p", t$p.value)
}
write.csv(out, if (nzchar(out_path)) out_path else stdout(), row.names = FALSE, quote = FALSE)
message("pROC ", as.character(packageVersion("pROC")))
