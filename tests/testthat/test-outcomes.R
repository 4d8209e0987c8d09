# A call returns every element's right value, or an error that accounts for
# each element: faults in combination, time limits with retries.

test_that("a task past its time limit with .retry is never a silent NULL: it runs again, then the call says it timed out", {
  local_pool(2)
  slow_first <- function(i) {
    if (i == 1) Sys.sleep(30) else Sys.sleep(0.4)
    i * 10
  }
  t0 <- Sys.time()
  err <- tryCatch(pool_sapply(1:6, slow_first, .timeout = 1, .retry = 1), error = function(e) e)
  expect_lt(elapsed_since(t0), 15)
  expect_s3_class(err, c("bgpool_task_timeout", "bgpool_worker_died", "bgpool_error"))
  expect_identical(err$unfinished, 1L)
  expect_accounted(err, as.list((1:6) * 10))
  # it ran twice (once per attempt), and both losses are reported
  expect_length(err$losses, 2L)
  expect_true(all(vapply(err$losses, `[[`, NA, "timed_out")))
  expect_match(conditionMessage(err), "element 1", fixed = TRUE)
  # the pool recovers
  expect_identical(pool_sapply(1:4, function(i) i + 1L), 2:5)
})

test_that("a task that overran its limit once finishes when .retry runs it again", {
  local_pool(2)
  flag <- tempfile()
  once_slow <- function(i, flag) {
    if (i == 2 && !file.exists(flag)) {
      file.create(flag)
      Sys.sleep(30)
    }
    i * 3
  }
  expect_identical(pool_sapply(1:5, once_slow, flag = flag, .timeout = 1, .retry = 1), (1:5) * 3)
  expect_true(file.exists(flag))
})

test_that("a task that finished in time is not stopped because the master was busy reading another reply", {
  local_pool(2)
  # element 1 sends back a reply that takes the master most of a second to
  # read (8 million strings); element 2 finishes in 0.2 s, meanwhile
  many_strings <- paste0("s", seq_len(8e6))
  pool_export("many_strings", envir = environment())
  task <- global_fun(function(i) {
    if (i == 1) return(many_strings)
    Sys.sleep(0.2)
    i
  })
  for (run in 1:3) {
    t0 <- Sys.time()
    res <- tryCatch(pool_lapply(1:2, task, .timeout = 0.6), error = function(e) e)
    took <- elapsed_since(t0)
    expect_false(inherits(res, "error"), info = if (inherits(res, "error")) conditionMessage(res))
    if (!inherits(res, "error")) expect_identical(res[[2]], 2L)
  }
  # the master was indeed busy past element 2's limit
  expect_gt(took, 0.6)
})

test_that("a worker lost with .retry: its elements run on the others at once, finished results are kept and right", {
  local_pool(2)
  flag <- tempfile()
  die_once <- function(i, flag) {
    if (i == 3 && !file.exists(flag)) {
      file.create(flag)
      tools::pskill(Sys.getpid(), tools::SIGKILL)
      Sys.sleep(5)
    }
    Sys.sleep(0.02)
    i^2
  }
  expect_identical(pool_sapply(1:10, die_once, flag = flag, .retry = 1), (1:10)^2)
  # without .retry the error accounts for every element
  unlink(flag)
  err <- tryCatch(pool_sapply(1:10, die_once, flag = flag, chunk.size = 1), error = function(e) e)
  expect_s3_class(err, "bgpool_worker_died")
  expect_true(3L %in% err$unfinished)
  expect_accounted(err, as.list((1:10)^2))
})

test_that("a task error and a lost worker in one call: both accounted for, task errors never retried", {
  local_pool(2)
  flag <- tempfile()
  mixed <- function(i, flag) {
    if (i == 2) stop("task two fails")
    if (i == 4 && !file.exists(flag)) {
      file.create(flag)
      tools::pskill(Sys.getpid(), tools::SIGKILL)
      Sys.sleep(5)
    }
    i
  }
  err <- tryCatch(pool_lapply(1:6, mixed, flag = flag, .retry = 1, chunk.size = 1),
                  error = function(e) e)
  expect_s3_class(err, "bgpool_task_error")
  expect_identical(err$failed, 2L)
  expect_identical(err$unfinished, integer())
  expect_accounted(err, as.list(1:6))
  expect_match(conditionMessage(err$errors[[1]]), "task two fails", fixed = TRUE)
})
