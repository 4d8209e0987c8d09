# A worker that dies is reported, its finished work kept, and replaced.

test_that("a killed worker gives bgpool_worker_died and the pool recovers", {
  local_pool(2)
  pids <- pool_pids()
  victim <- pids[1]
  f <- function(i, victim) {
    if (i == 3 && Sys.getpid() == victim) tools::pskill(victim, tools::SIGKILL)
    if (i == 3) Sys.sleep(0.5)
    i
  }
  # element 3 kills worker 1 only when worker 1 runs it; run until it does
  err <- NULL
  for (attempt in 1:20) {
    err <- tryCatch({ pool_lapply(1:4, f, victim = victim, chunk.size = 1); NULL },
                    bgpool_worker_died = function(e) e)
    if (!is.null(err)) break
    victim <- pool_pids()[1]
  }
  skip_if(is.null(err), "the scheduler never gave element 3 to worker 1 in 20 tries")
  expect_s3_class(err, c("bgpool_worker_died", "bgpool_error", "error"))
  expect_match(conditionMessage(err), died_how("SIGKILL"), fixed = TRUE)
  expect_match(conditionMessage(err), "element 3", fixed = TRUE)
  expect_true(3L %in% err$unfinished)
  finished <- setdiff(1:4, err$unfinished)
  expect_identical(err$results[finished], as.list(finished))
  expect_false(pid_alive(victim))

  # replaced at the next call: same size, fresh process, works
  expect_identical(pool_sapply(1:6, function(i) i * 2), (1:6) * 2)
  new_pids <- pool_pids()
  expect_length(new_pids, 2L)
  expect_false(victim %in% new_pids)
  expect_true(all(pid_alive(new_pids)))
})

test_that("a replacement worker gets the master's directory and the exports", {
  local_pool(2)
  assign("exported_value", 99, envir = globalenv())
  withr::defer(rm("exported_value", envir = globalenv()))
  pool_export("exported_value")
  victim <- pool_pids()[2]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  expect_identical(unlist(pool_evalq(exported_value)), c(99, 99))
  expect_identical(unlist(pool_evalq(getwd())), rep(getwd(), 2))
})

test_that("functions that keep their argument unevaluated see their own element", {
  local_pool(2)
  fs <- pool_lapply(1:5, function(x) function() x)
  expect_identical(vapply(fs, function(f) f(), 1L), 1:5)
  gs <- pool_map(function(a, b) function() a + b, 1:3, 4:6)
  expect_identical(vapply(gs, function(g) g(), 1L), c(5L, 7L, 9L))
})

test_that("init_pool() resets a pool in which a worker has died", {
  local_pool(2)
  pids <- pool_pids()
  tools::pskill(pids[1], tools::SIGKILL)
  expect_true(wait_pids_gone(pids[1]))
  expect_silent(init_pool(2))
  new_pids <- pool_pids()
  expect_length(new_pids, 2L)
  expect_identical(new_pids[2], pids[2])
  expect_false(pids[1] %in% new_pids)
  expect_identical(pool_sapply(1:4, function(i) i * 3), (1:4) * 3)
})

test_that("workers have temporary directories of their own, and none outlives the pool", {
  local_pool(2)
  dirs <- unlist(pool_evalq(tempdir()))
  expect_length(unique(dirs), 2L)
  expect_true(all(dir.exists(dirs)))
  expect_false(any(dirs == tempdir()))
  victim <- pool_pids()[1]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  dirs <- c(dirs, unlist(pool_evalq(tempdir())))
  pool_dir <- bgpool:::pool_info()$dir
  suppressMessages(delete_pool())
  expect_false(any(dir.exists(c(dirs, pool_dir))))
})

test_that("a worker that replaces a dead one gets the set-up of pool_evalq() and pool_call(), in order", {
  local_pool(2)
  pool_evalq(options(digits = 3))
  pool_call(function(value) Sys.setenv(BGPOOL_TEST_SETUP = value), "set up")
  pool_evalq(suppressPackageStartupMessages(library(tools)))
  x <- 1
  pool_export("x", envir = environment())
  pool_evalq(y <- x + 1)  # uses the export made before it
  probe <- function() list(getOption("digits"), Sys.getenv("BGPOOL_TEST_SETUP"),
                           "package:tools" %in% search(), y)
  expected <- list(3L, "set up", TRUE, 2)
  victim <- pool_pids()[2]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  expect_identical(pool_call(probe), list(expected, expected))
  expect_false(victim %in% pool_pids())
})

test_that("a lone worker that dies mid-call under .retry is replaced with its set-up before the rest runs", {
  local_pool(1)
  pool_evalq(options(digits = 3))
  flag <- tempfile()
  digits <- function(i, flag) {
    if (i == 3 && !file.exists(flag)) {
      file.create(flag)
      tools::pskill(Sys.getpid(), tools::SIGKILL)
      Sys.sleep(5)
    }
    getOption("digits")
  }
  expect_identical(pool_sapply(1:4, digits, flag = flag, .retry = 1), rep(3L, 4))
  expect_true(file.exists(flag))
})

test_that("a replacement gets each export as it was when exported, not as it is now", {
  local_pool(2)
  holder <- new.env()
  holder$v <- 1
  pool_export("holder", envir = environment())
  holder$v <- 2  # changed in the master after the export
  victim <- pool_pids()[1]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  expect_identical(pool_call(global_fun(function() holder$v)), list(1, 1))
})

test_that("a replacement whose set-up fails is stopped and the call says so; no task runs on it", {
  local_pool(2)
  flag <- tempfile()
  pool_call(function(flag) if (file.exists(flag)) stop("set-up refused: the flag exists"), flag)
  file.create(flag)
  victim <- pool_pids()[2]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  ran <- tempfile()
  err <- tryCatch(pool_sapply(1:4, function(i, ran) cat(i, "\n", file = ran, append = TRUE), ran = ran),
                  error = function(e) e)
  expect_s3_class(err, c("bgpool_setup_failed", "bgpool_error"))
  expect_match(conditionMessage(err), "set-up refused", fixed = TRUE)
  expect_match(conditionMessage(err), "init_pool(restart = TRUE)", fixed = TRUE)
  expect_false(file.exists(ran))
  # once the set-up works again, so does the pool
  unlink(flag)
  expect_identical(pool_sapply(1:4, function(i) i), 1:4)
  expect_length(pool_pids(), 2L)
})

test_that("a recorded call whose arguments hold an environment is replayed as it was made", {
  local_pool(2)
  holder <- new.env()
  holder$v <- "as set up"
  pool_call(global_fun(function(h) assign("v", h$v, envir = globalenv())), holder)
  holder$v <- "changed later"
  victim <- pool_pids()[2]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  expect_identical(pool_evalq(v), list("as set up", "as set up"))
})

test_that("past bgpool.max_setup_steps, a replacement is refused rather than set up differently", {
  local_pool(2)
  withr::local_options(bgpool.max_setup_steps = 3)
  for (i in 1:5) pool_call(function(i) assign("counter", i, envir = globalenv()), i)
  victim <- pool_pids()[1]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  err <- tryCatch(pool_sapply(1:2, identity), error = function(e) e)
  expect_s3_class(err, "bgpool_setup_failed")
  expect_match(conditionMessage(err), "too many to replay", fixed = TRUE)
  # init_pool() starts the set-up afresh
  suppressMessages(init_pool(2))
  expect_identical(pool_sapply(1:2, identity), 1:2)
})
