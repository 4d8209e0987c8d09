# Workers see the master's library paths, also those added after the pool
# started, so a package installed in a user library loads on workers.

test_that("a package in a library added at run time loads on the workers, also on a replacement", {
  lib <- withr::local_tempdir()
  src <- file.path(withr::local_tempdir(), "bgpooltinypkg")
  dir.create(file.path(src, "R"), recursive = TRUE)
  writeLines(c("Package: bgpooltinypkg", "Version: 0.0.1", "Title: Test", "Description: Test.",
               "License: MIT", "Authors@R: person('a', 'b', role = c('aut', 'cre'), email = 'a@b.invalid')"),
             file.path(src, "DESCRIPTION"))
  writeLines("export(answer)", file.path(src, "NAMESPACE"))
  writeLines("answer <- function() 42", file.path(src, "R", "answer.R"))
  out <- system2(file.path(R.home("bin"), "R"), c("CMD", "INSTALL", "--no-test-load", "-l", lib, src),
                 stdout = TRUE, stderr = TRUE)
  expect_true(dir.exists(file.path(lib, "bgpooltinypkg")), label = paste(out, collapse = "\n"))

  local_pool(2)
  old <- .libPaths()
  withr::defer(.libPaths(old))
  .libPaths(c(lib, old))
  # (the package is named through a string: R CMD check takes `pkg::` in
  # tests for a dependency)
  answer <- function(...) getExportedValue("bgpooltinypkg", "answer")()
  expect_identical(pool_sapply(1:2, answer), c(42, 42))
  expect_identical(pool_evalq(.libPaths()[1]), rep(list(normalizePath(lib)), 2))

  pids <- pool_pids()
  tools::pskill(pids[1], tools::SIGKILL)
  expect_true(wait_pids_gone(pids[1]))
  expect_identical(pool_call(answer), list(42, 42))
  expect_false(pool_pids()[1] == pids[1])
})
