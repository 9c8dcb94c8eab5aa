# The services come from the environment pytest sets (tests/test_r_client.py):
#   FORT_SERVICES_URL, JUPYTERHUB_API_TOKEN (alice: urls-study, one AWS role)
#   FORT_TEST_QUOTA_TOKEN (quinn: queries_per_day 1), FORT_TEST_SLOW_SQL (runs past the
#   service's query_timeout)
needs_services <- function() {
  skip_if(Sys.getenv("FORT_TEST_SERVICES") != "1",
          "no fort services (run through pytest: tests/test_r_client.py)")
}

as_user <- function(token_var, env = parent.frame()) {
  withr::local_envvar(JUPYTERHUB_API_TOKEN = Sys.getenv(token_var), .local_envir = env)
}

#' The condition `expr` signals (NULL when none).
caught <- function(expr) tryCatch({ expr; NULL }, error = function(e) e)
