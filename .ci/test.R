# Runs the testthat suite against the installed bgpool and ends with the
# line "N passed, N failed[, N skipped]" (counting test_that() blocks).
# Exits non-zero when any test failed.
library(testthat)
Sys.setenv(NOT_CRAN = "true")  # run the slow and memory-heavy tests too
results <- test_dir("tests/testthat", package = "bgpool", load_package = "installed",
                    reporter = ProgressReporter$new(show_praise = FALSE),
                    stop_on_failure = FALSE, stop_on_warning = FALSE)
df <- as.data.frame(results)
failed <- sum(df$failed > 0 | df$error)
skipped <- sum(df$skipped & !(df$failed > 0 | df$error))
passed <- nrow(df) - failed - skipped
cat(sprintf("\n%d passed, %d failed%s\n", passed, failed,
            if (skipped) sprintf(", %d skipped", skipped) else ""))
if (failed) quit(status = 1)
