# fort-query: datasets, queries, results, usage (API v1, see docs/query.md).

ARROW <- "application/vnd.apache.arrow.stream"
QUERY_FIELDS <- c(
  "id", "user", "dataset", "engine", "sql", "state", "submitted", "started", "finished",
  "rows", "bytes_scanned", "error", "result_available"
)

#' Datasets you may query, one row per column
#'
#' @return A data.frame with `dataset`, `description`, `engine`, `table`, `column`, `type`
#'   and the column's declared noise (`noise_distribution`, `noise_variance`; NA when the
#'   dataset declares none). The service's answer as a list is in `attr(x, "datasets")`.
#' @examples
#' \dontrun{fort_datasets()}
#' @export
fort_datasets <- function() {
  datasets_df(fort_json("query", "datasets")$datasets)
}

#' `GET datasets`' list as one row per column; a dataset's `noise` is
#' `{column: {distribution, variance}}`.
#' @noRd
datasets_df <- function(datasets) {
  rows <- list()
  for (d in datasets) {
    noise <- d$noise %||% list()
    tables <- d$tables %||% list()
    if (!length(tables)) tables <- list(list(name = NA, columns = list(list(name = NA))))
    for (t in tables) {
      for (col in t$columns) {
        declared <- if (!is.na(col$name %||% NA)) noise[[col$name]] else NULL
        rows[[length(rows) + 1]] <- list(
          dataset = d$name, description = d$description %||% NA, engine = d$engine,
          table = t$name %||% NA, column = col$name %||% NA, type = col$type %||% NA,
          noise_distribution = declared$distribution %||% NA,
          noise_variance = as.numeric(declared$variance %||% NA)
        )
      }
    }
  }
  out <- records_df(rows, c(
    "dataset", "description", "engine", "table", "column", "type", "noise_distribution",
    "noise_variance"
  ))
  out$noise_variance <- as.numeric(out$noise_variance)
  attr(out, "datasets") <- datasets
  out
}

#' Run SQL on a dataset and return the result as a data.frame
#'
#' Submits the query, waits with long polls (a progress line on stderr shows its state while
#' it runs) and downloads the result: as an Arrow stream when the arrow package is installed,
#' else as CSV.
#'
#' @param sql One read-only SQL statement.
#' @param dataset The dataset to query; when NULL, the one of your datasets whose tables the
#'   SQL names (an error lists the candidates when that is not exactly one).
#' @param progress Show the progress line.
#' @return A data.frame; `attr(x, "query")` is the query's record (id, rows, timings).
#' @section Errors: conditions of class `fort_refused` (the SQL or the dataset was refused:
#'   the server's message), `fort_quota` (a usage limit: fields `limit`, `used`, `max`,
#'   `resets` as POSIXct), `fort_query_failed` (the query ran and failed; `detail` is the
#'   engine's original message), all also
#'   `fort_error`.
#' @examples
#' \dontrun{
#' df <- fort_query("SELECT country, sum(shares) AS shares FROM url_shares GROUP BY 1")
#' tryCatch(fort_query("SELECT * FROM secret"), fort_refused = function(e) conditionMessage(e))
#' }
#' @export
fort_query <- function(sql, dataset = NULL, progress = TRUE) {
  check_string(sql, "sql")
  check_string(dataset, "dataset", null_ok = TRUE)
  check_flag(progress, "progress", null_ok = FALSE)
  dataset <- dataset %||% guess_dataset(sql)
  id <- fort_submit(sql, dataset, wait = 0.5)  # one request when the query is quick
  record <- attr(id, "query")
  id <- as.vector(id)
  if (!identical(record$state, "succeeded")) record <- fort_wait(id, progress = progress)
  out <- fort_results(id)
  attr(out, "query") <- record
  out
}

#' The dataset whose tables `sql` names, among those the caller may query.
#' @noRd
guess_dataset <- function(sql) {
  datasets <- fort_json("query", "datasets")$datasets
  names <- vapply(datasets, function(d) d$name, "")
  if (length(names) == 1) return(names)
  named <- vapply(datasets, function(d) {
    tables <- vapply(d$tables %||% list(), function(t) t$name, "")
    words <- c(tables, paste0(d$name, ".", tables))
    any(vapply(words, function(w) {
      grepl(paste0("(^|[^A-Za-z0-9_.])", gsub(".", "\\.", w, fixed = TRUE), "($|[^A-Za-z0-9_])"),
            sql, ignore.case = TRUE)
    }, FALSE))
  }, FALSE)
  if (sum(named) == 1) return(names[named])
  candidates <- if (any(named)) names[named] else names
  fort_abort(sprintf(
    "give `dataset`: the SQL names tables of %s (yours: %s)",
    if (any(named)) "several datasets" else "none of your datasets",
    paste(candidates, collapse = ", ")
  ), "fort_bad_input")
}

#' Start a query and return its id (see `fort_wait()`, `fort_results()`, `fort_cancel()`)
#'
#' @inheritParams fort_query
#' @param dataset The dataset to query.
#' @param wait Seconds (0 to 60, e.g. 0.5) the server may hold its answer until the query finished;
#'   the query's record is then `attr(id, "query")`.
#' @return The query id (a string).
#' @export
fort_submit <- function(sql, dataset, wait = NULL) {
  check_string(sql, "sql")
  check_string(dataset, "dataset")
  if (!is.null(wait) && (!is.numeric(wait) || length(wait) != 1 || is.na(wait) ||
                         wait < 0 || wait > 60)) {
    fort_abort("`wait` must be seconds from 0 to 60", "fort_bad_input")
  }
  answer <- fort_json("query", "queries", method = "POST", query = list(wait = wait),
                      body = list(sql = sql, dataset = dataset), timeout = 60 + (wait %||% 0))
  id <- answer$id
  if (!is.null(answer$submitted)) attr(id, "query") <- answer  # finished: its record
  id
}

#' A query's record: state, timings, rows, error
#'
#' @param query_id A query id from `fort_submit()` or `fort_history()`.
#' @param wait Long poll: the server answers once the query finished, or after `wait`
#'   seconds (0 to 60).
#' @return A list (fields as in `fort_history()`).
#' @export
fort_status <- function(query_id, wait = NULL) {
  check_string(query_id, "query_id")
  check_count(wait, "wait", 0, 60)
  fort_json("query", paste0("queries/", path_part(query_id)), query = list(wait = wait),
            timeout = 60 + (wait %||% 0))
}

#' Wait until a query finished
#'
#' @inheritParams fort_status
#' @param progress Show a progress line on stderr while the query runs.
#' @return The query's record; a `fort_query_failed` error when it failed or was cancelled
#'   (fields `state`, and `detail`: the engine's original message when the service rewrote
#'   it in plain words).
#' @export
fort_wait <- function(query_id, progress = TRUE) {
  check_string(query_id, "query_id")
  start <- Sys.time()
  elapsed <- function() as.numeric(difftime(Sys.time(), start, units = "secs"))
  shown <- FALSE
  show <- function(text) {
    if (progress) message("\r", formatC(text, width = -70), appendLF = FALSE)
    shown <<- progress
  }
  repeat {
    st <- fort_status(query_id, wait = 1)
    if (!st$state %in% c("queued", "running")) break
    show(sprintf("fort-query %s: %s %.1fs", substr(query_id, 1, 8), st$state, elapsed()))
  }
  if (st$state != "succeeded") {
    if (shown) message("")
    fort_abort(st$error %||% st$state, "fort_query_failed", query_id = query_id,
               state = st$state, detail = st$error_detail)
  }
  if (shown || elapsed() > 0.5) {
    show(sprintf("fort-query %s: %s rows in %.1fs", substr(query_id, 1, 8),
                 format(st$rows %||% NA), elapsed()))
    if (progress) message("")
  }
  st
}

#' The result of a finished query as a data.frame
#'
#' @inheritParams fort_status
#' @param format `"arrow"` (needs the arrow package), `"csv"` or `"json"` (one page of at
#'   most `max_rows` rows; the next page's token is `attr(x, "next_page_token")`). NULL: arrow
#'   when installed, else csv.
#' @param page_token With `"json"`: the previous page's `next_page_token`.
#' @param max_rows With `"json"`: rows per page (1 to 10000).
#' @param follow With `"arrow"`: start downloading while the query still runs.
#' @return A data.frame.
#' @export
fort_results <- function(query_id, format = NULL, page_token = NULL, max_rows = NULL,
                         follow = FALSE) {
  check_string(query_id, "query_id")
  check_string(page_token, "page_token", null_ok = TRUE)
  check_count(max_rows, "max_rows", 1, 10000)
  check_flag(follow, "follow", null_ok = FALSE)
  paged <- !is.null(page_token) || !is.null(max_rows)
  format <- format %||% if (paged) "json" else if (has_arrow()) "arrow" else "csv"
  if (!is.character(format) || length(format) != 1 || !format %in% c("arrow", "csv", "json")) {
    fort_abort("`format` must be \"arrow\", \"csv\" or \"json\"", "fort_bad_input")
  }
  if (format == "arrow" && !has_arrow()) {
    fort_abort("format = \"arrow\" needs the arrow package (install.packages(\"arrow\"))",
               "fort_bad_input")
  }
  path <- paste0("queries/", path_part(query_id), "/results")
  query <- list(format = format, page_token = page_token, max_rows = max_rows,
                follow = if (follow) TRUE)
  accept <- c(arrow = ARROW, csv = "text/csv", json = "application/json")[[format]]
  resp <- fort_request("query", path, query = query, accept = accept,
                       timeout = if (follow) 3600 else 60)
  switch(format,
    arrow = as.data.frame(arrow::read_ipc_stream(httr2::resp_body_raw(resp))),
    csv = read_csv_text(httr2::resp_body_string(resp, encoding = "UTF-8")),
    json = json_page(body_json(resp))
  )
}

path_part <- function(x) utils::URLencode(x, reserved = TRUE)

has_arrow <- function() requireNamespace("arrow", quietly = TRUE)

read_csv_text <- function(text) {
  if (!nzchar(text)) return(data.frame())
  utils::read.csv(text = text, stringsAsFactors = FALSE, check.names = FALSE,
                  na.strings = "", encoding = "UTF-8")
}

json_page <- function(page) {
  fields <- vapply(page$schema, function(c) c$name, "")
  out <- records_df(page$rows, fields)
  attr(out, "next_page_token") <- page$next_page_token
  out
}

#' Cancel a queued or running query
#'
#' @inheritParams fort_status
#' @return The query's id and state (invisibly); a `fort_http` error with status 409 when
#'   it had already finished.
#' @export
fort_cancel <- function(query_id) {
  check_string(query_id, "query_id")
  invisible(fort_json("query", paste0("queries/", path_part(query_id)), method = "DELETE"))
}

#' Your queries, newest first
#'
#' @param limit How many (1 to 1000; the service's default when NULL).
#' @param before The `submitted` time of the last query of the previous page.
#' @param user,all Admins only: another user's queries, or everyone's.
#' @return A data.frame, one row per query.
#' @export
fort_history <- function(limit = NULL, before = NULL, user = NULL, all = NULL) {
  check_count(limit, "limit", 1, 1000)
  check_string(before, "before", null_ok = TRUE)
  check_string(user, "user", null_ok = TRUE)
  check_flag(all, "all")
  queries <- fort_json("query", "queries",
                       query = list(limit = limit, before = before, user = user, all = all))
  records_df(queries$queries, QUERY_FIELDS)
}

#' Your usage limits: what is used, the maximum and when it resets
#'
#' @return A data.frame with `limit`, `used`, `max` and `resets` (POSIXct, UTC).
#' @export
fort_usage <- function() {
  limits <- fort_json("query", "usage")$limits
  out <- data.frame(
    limit = names(limits),
    used = vapply(limits, function(l) as.numeric(l$used %||% NA), 0),
    max = vapply(limits, function(l) as.numeric(l$max), 0),
    stringsAsFactors = FALSE, row.names = NULL
  )
  resets <- vapply(limits, function(l) as.numeric(parse_time(l$resets)), 0)
  out$resets <- as.POSIXct(unname(resets), origin = "1970-01-01", tz = "UTC")
  out
}

#' fort-query's OpenAPI document (a list)
#' @export
fort_openapi <- function() fort_json("query", "openapi.json")
