# fort-groups (who am I, which groups, roles, quota) and fort-credentials (short-lived AWS
# credentials for the user's own role).

#' Your study groups, grants, datasets, AWS roles and quota (fort-groups `GET me`)
#'
#' @return A list: `user`, `groups` (a data.frame with `name`, `expires` as POSIXct, NA when
#'   it never expires, and `source`), `grants`, `datasets`, `profiles`, `roles` (a named
#'   character vector, role name -> ARN), `quota`, `user_prefix`.
#' @export
fort_groups <- function() {
  me <- fort_json("groups", "me")
  groups <- records_df(me$groups, c("name", "expires", "source"))
  groups$expires <- as.POSIXct(
    vapply(me$groups, function(g) as.numeric(parse_time(g$expires)), 0),
    origin = "1970-01-01", tz = "UTC"
  )
  me$groups <- groups
  me$roles <- unlist(me$roles) %||% stats::setNames(character(0), character(0))
  me
}

#' Short-lived AWS credentials for one of your roles (fort-credentials)
#'
#' The credentials are an STS session of about an hour, limited to your own S3 prefix and
#' your groups' dataset prefixes; ask again when they expire. Inside a fort notebook the AWS
#' config the spawner writes (`AWS_CONFIG_FILE`) already has a profile per role whose
#' `credential_process` runs `fort-aws-credentials --role NAME`: SDKs that read
#' `credential_process` (paws, via `Sys.setenv(AWS_PROFILE = "fort-urls-study")`) need
#' nothing else; for packages that only read environment variables (aws.s3) use
#' `fort_aws_env()`.
#'
#' @param role A role name (e.g. `"fort-urls-study"`, not the ARN); NULL when you have
#'   exactly one role.
#' @return A list with `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`
#'   (POSIXct) and `role`.
#' @export
fort_aws_credentials <- function(role = NULL) {
  check_string(role, "role", null_ok = TRUE)
  role <- role %||% only_role()
  creds <- fort_json("credentials", "aws/credentials", query = list(role = role))
  missing <- setdiff(c("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"),
                     names(creds))
  if (length(missing)) {
    fort_abort(sprintf("fort-credentials answered without %s", paste(missing, collapse = ", ")),
               "fort_http")
  }
  creds$Expiration <- parse_time(creds$Expiration)
  creds$role <- role
  creds
}

only_role <- function() {
  roles <- names(fort_groups()$roles)
  if (length(roles) != 1) {
    fort_abort(sprintf(
      "give `role`: you have %s", if (length(roles)) paste(roles, collapse = ", ") else "no AWS role"
    ), "fort_bad_input")
  }
  roles
}

#' Put AWS credentials for one of your roles into the environment (for aws.s3, paws)
#'
#' Sets `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` (and unsets
#' `AWS_PROFILE`, so the keys are used); call it again after `Expiration`.
#'
#' @inheritParams fort_aws_credentials
#' @return The credentials (invisibly).
#' @examples
#' \dontrun{
#' fort_aws_env("fort-urls-study")
#' aws.s3::get_bucket("fort-user-data", prefix = Sys.getenv("FORT_USER_PREFIX"))
#' }
#' @export
fort_aws_env <- function(role = NULL) {
  creds <- fort_aws_credentials(role)
  Sys.setenv(
    AWS_ACCESS_KEY_ID = creds$AccessKeyId,
    AWS_SECRET_ACCESS_KEY = creds$SecretAccessKey,
    AWS_SESSION_TOKEN = creds$SessionToken
  )
  Sys.unsetenv("AWS_PROFILE")
  invisible(creds)
}
