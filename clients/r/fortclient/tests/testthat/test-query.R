test_that("fort_datasets lists the caller's datasets with their columns", {
  needs_services()
  ds <- fort_datasets()
  expect_s3_class(ds, "data.frame")
  expect_setequal(unique(ds$dataset), "url_shares")  # alice's only grant
  expect_equal(ds$column, c("url", "country", "shares", "views"))
  expect_equal(unique(ds$table), "url_shares")
  expect_true(all(nzchar(ds$type)))
  expect_true(all(c("noise_distribution", "noise_variance") %in% names(ds)))
})

test_that("fort_openapi reads the service's OpenAPI document", {
  needs_services()
  doc <- fort_openapi()
  expect_equal(doc$openapi, "3.1.0")
  expect_equal(doc$paths$`/queries`$post$operationId, "submitQuery")
})

test_that("fort_query returns the expected data.frame", {
  needs_services()
  df <- fort_query("SELECT country, count(*) AS n FROM url_shares GROUP BY 1 ORDER BY 1",
                   progress = FALSE)
  expect_s3_class(df, "data.frame")
  expect_equal(names(df), c("country", "n"))
  expect_identical(df$country, c("BR", "DE", "IN", "US"))
  expect_equal(as.numeric(df$n), c(50, 50, 50, 50))
  expect_equal(attr(df, "query")$rows, 4)

  rows <- fort_query("SELECT url, shares, views FROM url_shares WHERE views < 4 ORDER BY views",
                     dataset = "url_shares", progress = FALSE)
  expect_equal(rows, data.frame(
    url = paste0("https://example.org/", 0:2), shares = c(-20, 899, 818),
    views = c(0, 1.5, 3)
  ), ignore_attr = TRUE)
})

test_that("results come as CSV, and as JSON pages", {
  needs_services()
  id <- fort_submit("SELECT shares FROM url_shares ORDER BY views LIMIT 5", "url_shares")
  expect_equal(fort_wait(id, progress = FALSE)$state, "succeeded")
  csv <- fort_results(id, format = "csv")
  expect_equal(csv$shares, c(-20, 899, 818, 737, 656))
  if (requireNamespace("arrow", quietly = TRUE)) {
    expect_equal(fort_results(id, format = "arrow"), csv, ignore_attr = TRUE)
  } else {
    expect_error(fort_results(id, format = "arrow"), "needs the arrow package",
                 class = "fort_bad_input")
  }
  first <- fort_results(id, max_rows = 3)
  expect_equal(first$shares, c(-20, 899, 818))
  rest <- fort_results(id, page_token = attr(first, "next_page_token"), max_rows = 3)
  expect_equal(rest$shares, c(737, 656))
  expect_null(attr(rest, "next_page_token"))
  expect_true(id %in% fort_history(limit = 10)$id)
})

test_that("a refused query is a fort_refused condition with the server's message", {
  needs_services()
  e <- caught(fort_query("SELECT * FROM ads_targeting", dataset = "ads_targeting",
                         progress = FALSE))
  expect_s3_class(e, "fort_refused")
  expect_s3_class(e, "fort_error")
  expect_equal(e$status, 403)
  expect_match(conditionMessage(e), "ads_targeting")
  drop <- caught(fort_query("DROP TABLE url_shares", dataset = "url_shares"))
  expect_s3_class(drop, "fort_refused")
  expect_match(conditionMessage(drop), "DROP", ignore.case = TRUE)
  two <- caught(fort_query("SELECT 1; SELECT 2", dataset = "url_shares"))
  expect_s3_class(two, "fort_refused")
  expect_equal(two$status, 400)
  expect_match(conditionMessage(two), "exactly one statement")
})

test_that("quota exhaustion is a fort_quota condition with the reset time", {
  needs_services()
  as_user("FORT_TEST_QUOTA_TOKEN")
  expect_equal(nrow(fort_query("SELECT 1 AS one FROM url_shares LIMIT 1", progress = FALSE)), 1)
  e <- caught(fort_query("SELECT 1 AS one FROM url_shares LIMIT 1", progress = FALSE))
  expect_s3_class(e, "fort_quota")
  expect_equal(e$status, 429)
  expect_equal(e$limit, "queries_per_day")
  expect_equal(e$max, 1)
  expect_s3_class(e$resets, "POSIXct")
  expect_true(e$resets > Sys.time() && e$resets <= Sys.time() + 86400)
  expect_match(conditionMessage(e), "queries_per_day")
  usage <- fort_usage()
  expect_equal(usage$max[usage$limit == "queries_per_day"], 1)
  expect_equal(usage$resets[usage$limit == "queries_per_day"], e$resets)
})

test_that("a long query shows progress, and its failure is fort_query_failed", {
  needs_services()
  messages <- character()
  e <- withCallingHandlers(
    caught(fort_query(Sys.getenv("FORT_TEST_SLOW_SQL"), dataset = "url_shares")),
    message = function(m) {
      messages <<- c(messages, conditionMessage(m))
      invokeRestart("muffleMessage")
    }
  )
  expect_s3_class(e, "fort_query_failed")
  expect_match(conditionMessage(e), "time")
  expect_true(any(grepl("fort-query [0-9a-f]{8}: running [0-9.]+s", messages)))
})

test_that("an engine error arrives in plain words, the original as detail", {
  needs_services()
  e <- caught(fort_query("SELECT nope FROM url_shares", dataset = "url_shares"))
  expect_s3_class(e, "fort_query_failed")
  expect_match(conditionMessage(e), '^no column "nope" in the tables of this query')
  expect_match(conditionMessage(e), "fort_datasets()", fixed = TRUE)
  expect_match(e$detail, "^Binder Error: Referenced column \"nope\" not found")
  d <- caught(fort_query("DESCRIBE url_shares", dataset = "url_shares"))
  expect_s3_class(d, "fort_refused")
  expect_match(conditionMessage(d), "fort_datasets()", fixed = TRUE)
})

test_that("fort_cancel cancels a running query", {
  needs_services()
  id <- fort_submit(Sys.getenv("FORT_TEST_SLOW_SQL"), "url_shares")
  expect_equal(fort_cancel(id)$id, id)
  e <- caught(fort_wait(id, progress = FALSE))
  expect_s3_class(e, "fort_query_failed")
  expect_equal(e$state, "cancelled")
  again <- caught(fort_cancel(id))
  expect_s3_class(again, "fort_http")
  expect_equal(again$status, 409)
  unknown <- caught(fort_status(strrep("0", 32)))
  expect_equal(unknown$status, 404)
})

test_that("bad input is refused with a message naming the argument", {
  needs_services()
  expect_error(fort_query(42), "`sql` must be one non-empty string", class = "fort_bad_input")
  expect_error(fort_query(c("SELECT 1", "SELECT 2")), "`sql`", class = "fort_bad_input")
  expect_error(fort_query(""), "`sql`", class = "fort_bad_input")
  expect_error(fort_query("SELECT 1", dataset = NA), "`dataset`", class = "fort_bad_input")
  expect_error(fort_history(limit = 0), "`limit`", class = "fort_bad_input")
  expect_error(fort_results("x", format = "xml"), "`format`", class = "fort_bad_input")
  expect_error(fort_status("abc", wait = 61), "`wait`", class = "fort_bad_input")
  # what only the server can judge is its message, as fort_refused
  e <- caught(fort_status("abc def"))
  expect_s3_class(e, "fort_http")
  expect_equal(e$status, 404)
  expect_match(conditionMessage(e), "no query 'abc def' of yours", fixed = TRUE)
  # an id is one path segment: it cannot reach another endpoint
  expect_equal(caught(fort_status("../usage"))$status, 404)
  withr::local_envvar(JUPYTERHUB_API_TOKEN = "")
  expect_error(fort_datasets(), "JUPYTERHUB_API_TOKEN is not set", class = "fort_config")
})

test_that("without service URLs the error says which variable to set", {
  withr::local_envvar(FORT_SERVICES_URL = "", FORT_QUERY_URL = "")
  expect_error(fort_usage(), "FORT_QUERY_URL or FORT_SERVICES_URL", class = "fort_config")
})
