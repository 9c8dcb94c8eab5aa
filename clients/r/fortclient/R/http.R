# Plumbing shared by every function: the notebook's environment, HTTP requests to the fort
# services and the conditions their errors become.
#
# Environment (set by the fort spawner; the same variables the Python FortClient reads):
#   JUPYTERHUB_API_TOKEN   the notebook server's token (sent as "Authorization: token ...")
#   FORT_QUERY_URL, FORT_CREDENTIALS_URL, FORT_GROUPS_URL   each service's URL, or else
#   FORT_SERVICES_URL      the services' base URL (+ "fort-query/" etc.)

`%||%` <- function(x, y) if (is.null(x)) y else x

SERVICES <- c(
  query = "fort-query", credentials = "fort-credentials", groups = "fort-groups"
)

#' A fort condition: class `c(class, "fort_error", "error", "condition")` carrying `fields`.
#' @noRd
fort_condition <- function(message, class = character(), ...) {
  structure(
    class = c(class, "fort_error", "error", "condition"),
    list(message = message, call = NULL, ...)
  )
}

fort_abort <- function(message, class = character(), ...) {
  stop(fort_condition(message, class, ...))
}

#' Checks of the caller's arguments: a `fort_bad_input` error naming the argument.
#' @noRd
check_string <- function(x, arg, null_ok = FALSE) {
  if (is.null(x) && null_ok) return(invisible(x))
  if (!is.character(x) || length(x) != 1 || is.na(x) || !nzchar(trimws(x))) {
    what <- if (is.null(x)) "NULL" else sprintf("a %s of length %d", class(x)[1], length(x))
    fort_abort(
      sprintf("`%s` must be one non-empty string, not %s", arg, what), "fort_bad_input"
    )
  }
  invisible(x)
}

check_count <- function(x, arg, lo, hi, null_ok = TRUE) {
  if (is.null(x) && null_ok) return(invisible(x))
  if (!is.numeric(x) || length(x) != 1 || is.na(x) || x != round(x) || x < lo || x > hi) {
    fort_abort(
      sprintf("`%s` must be a whole number from %d to %d", arg, lo, hi), "fort_bad_input"
    )
  }
  invisible(x)
}

check_flag <- function(x, arg, null_ok = TRUE) {
  if (is.null(x) && null_ok) return(invisible(x))
  if (!is.logical(x) || length(x) != 1 || is.na(x)) {
    fort_abort(sprintf("`%s` must be TRUE or FALSE", arg), "fort_bad_input")
  }
  invisible(x)
}

#' The URL of a fort service from the notebook's environment (always ending in "/").
#' @noRd
fort_service_url <- function(service) {
  name <- SERVICES[[service]]
  specific <- paste0("FORT_", toupper(service), "_URL")
  url <- Sys.getenv(specific, "")
  if (!nzchar(url)) {
    base <- Sys.getenv("FORT_SERVICES_URL", "")
    if (!nzchar(base)) {
      fort_abort(
        sprintf("set %s or FORT_SERVICES_URL (the fort services' URL)", specific), "fort_config"
      )
    }
    url <- paste0(sub("/+$", "", base), "/", name, "/")
  }
  if (!endsWith(url, "/")) url <- paste0(url, "/")
  url
}

fort_token <- function() {
  token <- Sys.getenv("JUPYTERHUB_API_TOKEN", "")
  if (!nzchar(token)) {
    fort_abort("JUPYTERHUB_API_TOKEN is not set (are you in a fort notebook?)", "fort_config")
  }
  token
}

query_value <- function(x) {
  if (is.logical(x)) return(tolower(as.character(x)))
  if (is.numeric(x)) return(format(x, scientific = FALSE, trim = TRUE))
  as.character(x)
}

#' One request to a fort service's API v1; errors become fort conditions.
#' @noRd
fort_request <- function(service, path, method = "GET", query = list(), body = NULL,
                         accept = "application/json", timeout = 60) {
  base <- fort_service_url(service)
  req <- httr2::request(paste0(base, "api/v1/", path))
  req <- httr2::req_headers(
    req, Authorization = paste("token", fort_token()), Accept = accept
  )
  query <- Filter(Negate(is.null), query)
  if (length(query)) {
    req <- do.call(httr2::req_url_query, c(list(req), lapply(query, query_value)))
  }
  if (!is.null(body)) req <- httr2::req_body_json(req, body)
  req <- httr2::req_method(req, method)
  req <- httr2::req_timeout(req, timeout)
  req <- httr2::req_error(req, is_error = function(resp) FALSE)
  # no automatic retry: httr2 would otherwise sleep out a 429's Retry-After (until the quota
  # resets, e.g. midnight) before returning; the caller gets a fort_quota condition instead
  req <- httr2::req_retry(req, max_tries = 1, is_transient = function(resp) FALSE)
  resp <- tryCatch(httr2::req_perform(req), error = function(e) {
    fort_abort(
      sprintf("%s is unreachable at %s: %s", SERVICES[[service]], base, conditionMessage(e)),
      "fort_unreachable"
    )
  })
  if (httr2::resp_status(resp) >= 400) fort_http_error(resp, SERVICES[[service]])
  resp
}

fort_json <- function(...) {
  body_json(fort_request(...))
}

#' A response's JSON body as lists (no simplification: records stay records).
#' @noRd
body_json <- function(resp) {
  jsonlite::parse_json(httr2::resp_body_string(resp, encoding = "UTF-8"))
}

#' The service's error as a condition: 429 is `fort_quota` (with the limit and its reset
#' time), 400/401/403 `fort_refused`, anything else `fort_http`.
#' @noRd
fort_http_error <- function(resp, service) {
  status <- httr2::resp_status(resp)
  err <- tryCatch(
    body_json(resp)$error, error = function(e) NULL
  )
  message <- if (is.list(err) && is.character(err$message)) {
    err$message
  } else {
    text <- tryCatch(httr2::resp_body_string(resp), error = function(e) "")
    sprintf("HTTP %d from %s: %s", status, service, substr(text, 1, 200))
  }
  request_id <- if (is.list(err)) err$request_id else NULL
  if (status == 429) {
    quota <- if (is.list(err) && is.list(err$quota)) err$quota else list()
    retry <- suppressWarnings(as.numeric(httr2::resp_header(resp, "Retry-After") %||% NA))
    resets <- parse_time(quota$resets)
    if (is.na(resets) && !is.na(retry)) resets <- Sys.time() + retry
    stop(fort_condition(
      message, "fort_quota", status = status, service = service, request_id = request_id,
      limit = quota$limit, used = quota$used, max = quota$max, resets = resets,
      retry_after = retry
    ))
  }
  class <- if (status %in% c(400, 401, 403)) "fort_refused" else "fort_http"
  stop(fort_condition(
    message, class, status = status, service = service, request_id = request_id
  ))
}

#' ISO 8601 time (as the services write it) -> POSIXct in UTC; NULL/NA -> NA.
#' @noRd
parse_time <- function(x) {
  if (is.null(x) || length(x) != 1 || is.na(x)) return(as.POSIXct(NA, tz = "UTC"))
  offset <- 0
  m <- regmatches(x, regexec("([+-])([0-9]{2}):?([0-9]{2})$", x))[[1]]
  if (length(m)) {
    offset <- (as.numeric(m[3]) * 3600 + as.numeric(m[4]) * 60) * ifelse(m[2] == "-", -1, 1)
    x <- substr(x, 1, nchar(x) - nchar(m[1]))
  }
  x <- sub("Z$", "", x)
  t <- as.POSIXct(x, format = "%Y-%m-%dT%H:%M:%OS", tz = "UTC")
  if (is.na(t)) t <- as.POSIXct(x, format = "%Y-%m-%d", tz = "UTC")
  t - offset
}

#' A list of records (lists) as a data.frame; NULL fields become NA.
#' @noRd
records_df <- function(records, fields) {
  cols <- lapply(fields, function(f) {
    values <- lapply(records, function(r) r[[f]] %||% NA)
    unlist(values, use.names = FALSE) %||% logical(0)
  })
  names(cols) <- fields
  as.data.frame(cols, stringsAsFactors = FALSE)
}
