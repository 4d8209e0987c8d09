# Runs the testthat suite against the installed bgpool, three ways:
#   native  the build in the first library of R_LIBS (Linux's calls)
#   posix   the build with BGPOOL_POSIX_ONLY=1, in .lib-posix: the path
#           macOS takes (shm_open, getpeereid, accept, /dev/urandom)
#   psock   the native build with BGPOOL_BACKEND=psock: the backend Windows
#           gets, with the native routines Windows does not build made to
#           fail (BGPOOL_TEST_ABSENT_ROUTINES)
# and ends with the line "N passed, N failed[, N skipped]" over all three
# (counting test_that() blocks). Exits non-zero when any test failed.
# Usage: Rscript .ci/test.R [native|posix|psock ...]; BGPOOL_TEST_FILTER
# narrows the files (a regular expression, as testthat's `filter`).
args <- commandArgs(trailingOnly = TRUE)

run_one <- function(way) {
  library(testthat)
  Sys.setenv(NOT_CRAN = "true")  # run the slow and memory-heavy tests too
  options(testthat.progress.max_fails = Inf)  # report every failure, not the first ten
  filter <- Sys.getenv("BGPOOL_TEST_FILTER")
  results <- test_dir("tests/testthat", package = "bgpool", load_package = "installed",
                      filter = if (nzchar(filter)) filter,
                      reporter = ProgressReporter$new(show_praise = FALSE),
                      stop_on_failure = FALSE, stop_on_warning = FALSE)
  df <- as.data.frame(results)
  bad <- df$failed > 0 | df$error
  counts <- c(passed = sum(!bad & !df$skipped), failed = sum(bad), skipped = sum(df$skipped & !bad))
  saveRDS(counts, Sys.getenv("BGPOOL_TEST_COUNTS"))
}

# Where each way finds its build, and what it sets.
way_env <- function(way) {
  libs <- strsplit(Sys.getenv("R_LIBS"), .Platform$path.sep, fixed = TRUE)[[1L]]
  switch(way,
    native = c(BGPOOL_BACKEND = "native"),
    posix = c(BGPOOL_BACKEND = "native",
              R_LIBS = paste(c(normalizePath(".lib-posix"), libs), collapse = .Platform$path.sep)),
    psock = c(BGPOOL_BACKEND = "psock", BGPOOL_TEST_ABSENT_ROUTINES = absent_routines()))
}

# The routines src/windows/absent.cpp defines (those Windows does not build).
absent_routines <- function() {
  lines <- grep("absent(); }", readLines("src/windows/absent.cpp"), value = TRUE, fixed = TRUE)
  paste(sub("^[^(]*[ *&]([A-Za-z_][A-Za-z0-9_]*)\\(.*$", "\\1", lines), collapse = ",")
}

if (identical(args, "--one")) {
  run_one()
  quit(status = 0)
}
ways <- if (length(args)) args else c("native", "posix", "psock")
total <- c(passed = 0, failed = 0, skipped = 0)
lines <- character()
for (way in ways) {
  cat(sprintf("\n==== tests: %s ====\n", way))
  counts_file <- tempfile(fileext = ".rds")
  env <- c(way_env(way), BGPOOL_TEST_COUNTS = counts_file)
  status <- system2(file.path(R.home("bin"), "Rscript"), c(".ci/test.R", "--one"),
                    env = paste0(names(env), "=", shQuote(env)))
  counts <- if (file.exists(counts_file)) readRDS(counts_file)
            else c(passed = 0, failed = 1, skipped = 0)  # the run itself failed
  total <- total + counts
  lines <- c(lines, sprintf("%s: %d passed, %d failed, %d skipped%s", way, counts[["passed"]],
                            counts[["failed"]], counts[["skipped"]],
                            if (status != 0) sprintf(" (the run exited with status %d)", status) else ""))
}
cat("\n", paste(lines, collapse = "\n"), "\n", sep = "")
cat(sprintf("\n%d passed, %d failed%s\n", total[["passed"]], total[["failed"]],
            if (total[["skipped"]]) sprintf(", %d skipped", total[["skipped"]]) else ""))
if (total[["failed"]] > 0) quit(status = 1)
