test_that("fort_groups describes the caller", {
  needs_services()
  me <- fort_groups()
  expect_equal(me$user, "alice")
  expect_equal(me$groups$name, "urls-study")
  expect_s3_class(me$groups$expires, "POSIXct")
  expect_equal(names(me$roles), "fort-urls-study")
})

test_that("fort_aws_credentials issues the caller's own role's credentials", {
  needs_services()
  creds <- fort_aws_credentials()  # alice has exactly one role
  expect_equal(creds$role, "fort-urls-study")
  for (field in c("AccessKeyId", "SecretAccessKey", "SessionToken")) {
    expect_true(is.character(creds[[field]]) && nzchar(creds[[field]]))
  }
  expect_s3_class(creds$Expiration, "POSIXct")
  expect_true(creds$Expiration > Sys.time())
})

test_that("fort_aws_env sets the variables aws.s3 and paws read", {
  needs_services()
  withr::local_envvar(AWS_ACCESS_KEY_ID = NA, AWS_SECRET_ACCESS_KEY = NA,
                      AWS_SESSION_TOKEN = NA, AWS_PROFILE = "fort-urls-study")
  creds <- fort_aws_env("fort-urls-study")
  expect_equal(Sys.getenv("AWS_ACCESS_KEY_ID"), creds$AccessKeyId)
  expect_equal(Sys.getenv("AWS_SECRET_ACCESS_KEY"), creds$SecretAccessKey)
  expect_equal(Sys.getenv("AWS_SESSION_TOKEN"), creds$SessionToken)
  expect_equal(Sys.getenv("AWS_PROFILE", unset = "<unset>"), "<unset>")
})

test_that("another group's role and a malformed role are refused", {
  needs_services()
  e <- caught(fort_aws_credentials("fort-ads-study"))
  expect_s3_class(e, "fort_refused")
  expect_equal(e$status, 403)
  bad <- caught(fort_aws_credentials("arn:aws:iam::1:role/x"))
  expect_s3_class(bad, "fort_refused")
  expect_equal(bad$status, 400)
  expect_match(conditionMessage(bad), "not a valid role name")
  expect_error(fort_aws_credentials(c("a", "b")), "`role`", class = "fort_bad_input")
})
