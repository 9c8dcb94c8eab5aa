# Which function serves each operation of fort-query's OpenAPI document
# (fort_hub/services/query/openapi.json). tests/test_r_client.py checks that every operation
# has an exported function here whose arguments include each of the operation's parameters,
# so the package and the API cannot drift apart.
OPERATIONS <- c(
  getOpenAPI = "fort_openapi",
  submitQuery = "fort_submit",
  listQueries = "fort_history",
  getQuery = "fort_status",
  cancelQuery = "fort_cancel",
  getResults = "fort_results",
  listDatasets = "fort_datasets",
  getUsage = "fort_usage"
)
