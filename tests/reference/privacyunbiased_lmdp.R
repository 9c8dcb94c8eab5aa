# Runs PrivacyUnbiased's lmdp() (Evans and King's R package) on a CSV and prints its numbers as
# JSON, for tests/test_inference_reference.py. The package is not part of fort-hub: point
# PRIVACYUNBIASED_DIR at a checkout of github.com/georgieevans/PrivacyUnbiased (its R/ files are
# sourced; it needs the Debian packages r-cran-mvtnorm r-cran-matrix r-cran-gdata
# r-cran-matrixcalc).
#
#   Rscript privacyunbiased_lmdp.R DATA.csv SEED NSIMS
#
# DATA.csv: the first row holds each column's noise standard deviation (PrivacyUnbiased's
# convention), the first column is the response "y", the others the covariates.
args <- commandArgs(trailingOnly = TRUE)
dir <- Sys.getenv("PRIVACYUNBIASED_DIR")
for (f in c("fit_model.R", "utility_functions.R")) source(file.path(dir, "R", f))
data <- read.csv(args[1])
set.seed(as.integer(args[2]))
covariates <- setdiff(colnames(data), "y")
formula <- as.formula(paste("y ~", paste(covariates, collapse = " + ")))
fit <- lmdp(formula, data = data, nsims_var = as.integer(args[3]))
num <- function(x) paste0("[", paste(sprintf("%.17g", as.numeric(x)), collapse = ", "), "]")
cat(sprintf('{"beta": %s, "sigma_sq": %.17g, "beta_vcov": %s, "boot": %s}\n',
            num(fit$beta_tilde), as.numeric(fit$Sigma_sq_hat), num(t(fit$beta_tilde_vcov)),
            tolower(as.character(fit$boot))))
