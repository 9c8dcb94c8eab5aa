# What the package makes of the services' answers, without services.

test_that("datasets become one row per column with their declared noise", {
  datasets <- list(
    list(name = "url_shares", description = "URLs", engine = "duckdb",
         noise = list(views = list(distribution = "gaussian", variance = 2.5)),
         tables = list(list(name = "url_shares", columns = list(
           list(name = "url", type = "VARCHAR"), list(name = "views", type = "DOUBLE")
         )))),
    list(name = "broken", engine = "athena", error = "unreachable", tables = list())
  )
  df <- fortclient:::datasets_df(datasets)
  expect_equal(df, data.frame(
    dataset = c("url_shares", "url_shares", "broken"),
    description = c("URLs", "URLs", NA),
    engine = c("duckdb", "duckdb", "athena"),
    table = c("url_shares", "url_shares", NA),
    column = c("url", "views", NA),
    type = c("VARCHAR", "DOUBLE", NA),
    noise_distribution = c(NA, "gaussian", NA),
    noise_variance = c(NA, 2.5, NA),
    stringsAsFactors = FALSE
  ), ignore_attr = TRUE)
  expect_identical(attr(df, "datasets"), datasets)
})

test_that("the services' times are read as UTC", {
  t <- fortclient:::parse_time("2026-12-03T01:30:00.5+01:30")
  expect_equal(format(t, "%Y-%m-%d %H:%M:%OS1", tz = "UTC"), "2026-12-03 00:00:00.5")
  expect_equal(fortclient:::parse_time("2026-12-03T00:00:00Z"),
               as.POSIXct("2026-12-03", tz = "UTC"))
  expect_true(is.na(fortclient:::parse_time(NULL)))
})
