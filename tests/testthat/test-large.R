# Payloads above 2 GiB, both ways. Opt-in (BGPOOL_LARGE=true): they need
# about 12 GB of memory and a few minutes.

test_that("a 3 GB raw vector goes to a worker and comes back intact", {
  skip_if_not(identical(Sys.getenv("BGPOOL_LARGE"), "true"),
              "opt-in: set BGPOOL_LARGE=true (needs about 12 GB of memory)")
  local_pool(1)
  n <- 3e9
  big <- as.raw(seq_len(251) - 1L)
  big <- rep_len(big, n)
  # streamed in a task's argument, checked on the worker
  checked <- pool_lapply(list(big), function(x) c(length(x), sum(as.integer(x[c(1, 2^31 + 7, n)]))))
  expect_identical(checked[[1]], c(n, sum(as.integer(big[c(1, 2^31 + 7, n)]))))
  # and back as a result
  back <- pool_call(function(n) rep_len(as.raw(seq_len(251) - 1L), n), n)[[1]]
  expect_identical(length(back), n)
  expect_true(identical(back, big))
})
