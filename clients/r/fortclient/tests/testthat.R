# R CMD check entry point. The suite needs running fort services: tests/test_r_client.py
# (pytest) starts a real JupyterHub with fort-query, fort-credentials and fort-groups and runs
# it; without them (FORT_TEST_SERVICES unset) every test skips.
library(testthat)
library(fortclient)
test_check("fortclient")
