test_that("functions that need a pool fail with bgpool_no_pool without one", {
  suppressMessages(delete_pool())
  expect_false(pool_exists())
  x_bgpool <- 1
  calls <- list(
    pool_export = function() pool_export("x_bgpool", envir = environment()),
    pool_lapply = function() pool_lapply(1:3, identity),
    pool_sapply = function() pool_sapply(1:3, identity),
    pool_map = function() pool_map(function(a, b) a + b, 1:3, 1),
    pool_call = function() pool_call(Sys.getpid),
    pool_evalq = function() pool_evalq(1 + 1)
  )
  for (nm in names(calls)) {
    err <- expect_error(calls[[nm]](), class = "bgpool_no_pool", label = nm)
    expect_match(conditionMessage(err), "init_pool()", fixed = TRUE, label = nm)
  }
  expect_false(pool_exists())
  expect_null(bgpool:::pool_info())
})

test_that("an error in one element becomes a bgpool_task_error", {
  local_pool(test_pool_size())
  f <- function(i) if (i == 3) stop("boom") else i
  err <- expect_error(pool_lapply(1:4, f), class = "bgpool_task_error")
  expect_s3_class(err, c("bgpool_task_error", "bgpool_error", "error"))
  msg <- conditionMessage(err)
  expect_match(msg, "boom", fixed = TRUE)
  expect_match(msg, "\\b3\\b", perl = TRUE)
  expect_identical(unname(err$failed), 3L)
  expect_type(err$results, "list")
  expect_length(err$results, 4L)
  expect_identical(err$results[[1]], 1L)
  expect_identical(err$results[[2]], 2L)
  expect_null(err$results[[3]])
  expect_identical(err$results[[4]], 4L)
  expect_length(err$errors, 1L)
  expect_match(error_text(err$errors[[1]]), "boom", fixed = TRUE)

  # the pool keeps working afterwards
  expect_identical(pool_lapply(1:4, function(i) i * 10L), list(10L, 20L, 30L, 40L))
  expect_identical(pool_sapply(1:6, function(i) i^2), (1:6)^2)
  expect_pool_consistent()
})

test_that("several failing elements are all reported; the others still run", {
  local_pool(test_pool_size())
  dir <- withr::local_tempdir()
  f <- function(i, dir) {
    # element 2 fails late, after element 7 has already failed: $failed and
    # $errors must still be in input order, not in order of completion
    if (i == 2) Sys.sleep(0.5)
    if (i %in% c(2, 7)) stop(sprintf("bad element %d", i))
    file.create(file.path(dir, paste0("done-", i)))
    i * 2
  }
  err <- expect_error(pool_lapply(1:8, f, dir = dir), class = "bgpool_task_error")
  expect_identical(unname(err$failed), c(2L, 7L))
  expect_length(err$results, 8L)
  expect_null(err$results[[2]])
  expect_null(err$results[[7]])
  expect_identical(err$results[c(1, 3:6, 8)], as.list(c(1, 3:6, 8) * 2))
  expect_length(err$errors, 2L)
  expect_match(error_text(err$errors[[1]]), "bad element 2", fixed = TRUE)
  expect_match(error_text(err$errors[[2]]), "bad element 7", fixed = TRUE)
  # the message reports (at least) one of the failures, with its index
  msg <- conditionMessage(err)
  expect_true(grepl("bad element 2", msg, fixed = TRUE) ||
                grepl("bad element 7", msg, fixed = TRUE))
  if (grepl("bad element 2", msg, fixed = TRUE)) expect_match(msg, "\\b2\\b", perl = TRUE)
  if (grepl("bad element 7", msg, fixed = TRUE)) expect_match(msg, "\\b7\\b", perl = TRUE)
  expect_setequal(list.files(dir), paste0("done-", c(1, 3:6, 8)))

  # same through pool_sapply
  err2 <- expect_error(pool_sapply(1:5, function(i) if (i == 5) stop("last one") else i),
                       class = "bgpool_task_error")
  expect_identical(unname(err2$failed), 5L)
  expect_match(conditionMessage(err2), "last one", fixed = TRUE)
  expect_match(conditionMessage(err2), "\\b5\\b", perl = TRUE)
  expect_identical(err2$results[1:4], list(1L, 2L, 3L, 4L))
  expect_identical(pool_sapply(1:5, function(i) i), 1:5)
  expect_pool_consistent()
})

test_that("pool_map task errors name the failing element", {
  local_pool(test_pool_size())
  f <- function(x, y) if (x == 2) stop("map failure") else x + y
  err <- expect_error(pool_map(f, c(alpha = 1, beta = 2, gamma = 3), 10),
                      class = "bgpool_task_error")
  expect_match(conditionMessage(err), "map failure", fixed = TRUE)
  expect_match(conditionMessage(err), "beta", fixed = TRUE)
  expect_match(conditionMessage(err), "\\b2\\b", perl = TRUE)
  expect_identical(unname(err$failed), 2L)
  expect_length(err$results, 3L)
  expect_identical(err$results[[1]], 11)
  expect_identical(err$results[[3]], 13)

  g <- function(fruit) if (fruit == "banana") stop("bad fruit") else nchar(fruit)
  err <- expect_error(pool_map(g, c("apple", "banana", "cherry")),
                      class = "bgpool_task_error")
  expect_match(conditionMessage(err), "bad fruit", fixed = TRUE)
  expect_match(conditionMessage(err), "banana", fixed = TRUE)
  expect_identical(unname(err$failed), 2L)

  expect_identical(pool_map(function(x, y) x + y, c(a = 1, b = 2), 1),
                   list(a = 2, b = 3))
  expect_pool_consistent()
})

test_that("errors in pool_call and pool_evalq", {
  n <- test_pool_size()
  local_pool(n)
  err <- expect_error(pool_call(function() stop("call boom")),
                      class = "bgpool_task_error")
  expect_s3_class(err, "bgpool_error")
  expect_match(conditionMessage(err), "call boom", fixed = TRUE)
  expect_identical(unname(err$failed), seq_len(n))
  expect_length(err$errors, n)
  expect_length(err$results, n)

  err <- expect_error(pool_evalq(stop("evalq boom")), class = "bgpool_task_error")
  expect_match(conditionMessage(err), "evalq boom", fixed = TRUE)
  expect_identical(unname(err$failed), seq_len(n))

  expect_identical(pool_call(function() "fine"), rep(list("fine"), n))
  expect_identical(pool_evalq(1L + 1L), rep(list(2L), n))
  expect_pool_consistent()
})

test_that("pool_call/pool_evalq report failed workers in worker order", {
  n <- test_pool_size()
  skip_if(n < 2L)
  local_pool(n)
  # element i of pool_call() is worker i; make worker 1 fail last
  first_pid_bgpool <- pool_call(Sys.getpid)[[1]]
  slow_first <- function(first) {
    if (Sys.getpid() == first) Sys.sleep(0.5)
    stop(paste("failed on", Sys.getpid()))
  }
  err <- expect_error(pool_call(slow_first, first_pid_bgpool),
                      class = "bgpool_task_error")
  expect_identical(unname(err$failed), seq_len(n))
  expect_match(error_text(err$errors[[1]]), paste("failed on", first_pid_bgpool),
               fixed = TRUE)

  pool_export("first_pid_bgpool", envir = environment())
  err <- expect_error(pool_evalq({
    if (Sys.getpid() == first_pid_bgpool) Sys.sleep(0.5)
    stop(paste("evalq failed on", Sys.getpid()))
  }), class = "bgpool_task_error")
  expect_identical(unname(err$failed), seq_len(n))
  expect_match(error_text(err$errors[[1]]),
               paste("evalq failed on", first_pid_bgpool), fixed = TRUE)
  expect_pool_consistent()
})

test_that("invalid sizes are rejected and create no pool", {
  suppressMessages(delete_pool())
  withr::defer(suppressMessages(delete_pool()))
  bad <- list(0, -1, "a", NA, c(1, 2), 1.5)
  for (size in bad) {
    lbl <- paste("init_pool(", deparse(size), ")")
    err <- expect_error(init_pool(size), class = "bgpool_error", label = lbl)
    expect_match(conditionMessage(err), "size", label = lbl)
    expect_false(pool_exists())
    expect_identical(pool_size(), 0L)
    expect_null(bgpool:::pool_info())
  }
})

test_that("pool_export of a missing variable names it and exports nothing", {
  n <- test_pool_size()
  local_pool(n)
  ok_var_bgpool <- 1
  err <- expect_error(pool_export("no_such_var_bgpool", envir = environment()),
                      class = "bgpool_error")
  expect_match(conditionMessage(err), "no_such_var_bgpool", fixed = TRUE)

  err <- expect_error(pool_export(c("ok_var_bgpool", "no_such_var_bgpool"),
                                  envir = environment()),
                      class = "bgpool_error")
  expect_match(conditionMessage(err), "no_such_var_bgpool", fixed = TRUE)
  expect_identical(pool_evalq(exists("ok_var_bgpool")), rep(list(FALSE), n))

  pool_export("ok_var_bgpool", envir = environment())
  expect_identical(pool_evalq(ok_var_bgpool), rep(list(1), n))
  expect_pool_consistent()
})

test_that("a non-function fun is rejected", {
  local_pool(test_pool_size())
  err <- expect_error(pool_lapply(1:3, "not a function"), class = "bgpool_error")
  expect_match(conditionMessage(err), "fun", fixed = TRUE)
  expect_error(pool_lapply(1:3, 42), class = "bgpool_error")
  expect_error(pool_sapply(1:3, "no_such_function_bgpool"), class = "bgpool_error")
  expect_error(pool_map("no_such_function_bgpool", 1:3), class = "bgpool_error")
  expect_identical(pool_lapply(1:3, "identity"), list(1L, 2L, 3L))
  expect_pool_consistent()
})

test_that("no worker processes leak after errors", {
  local_pool(test_pool_size())
  pids <- pool_pids()
  try(pool_lapply(1:4, function(i) stop("leak check")), silent = TRUE)
  try(pool_evalq(stop("leak check")), silent = TRUE)
  try(pool_export("no_such_var_bgpool", envir = environment()), silent = TRUE)
  expect_pool_consistent()
  expect_setequal(pool_pids(), pids)

  suppressMessages(delete_pool())
  expect_true(wait_pids_gone(pids, 5))
  expect_pool_consistent()

  try(init_pool(0), silent = TRUE)
  expect_false(pool_exists())
  expect_pool_consistent()
})

test_that("a task's own conditions behave as in base R and parallel", {
  local_pool(2)
  # a warning given to signalCondition() shows nowhere, and the task returns
  expect_silent(res <- pool_sapply(1:2, function(i) {
    signalCondition(simpleWarning("w"))
    i
  }))
  expect_identical(res, 1:2)
  # so does an interrupt condition the task signals itself; parallel's
  # worker loop cannot resume one, so the psock backend fails the task
  signals_interrupt <- function(i) {
    signalCondition(structure(class = c("interrupt", "condition"), list()))
    i
  }
  if (on_psock()) {
    err <- tryCatch(pool_sapply(1:2, signals_interrupt), error = function(e) e)
    expect_s3_class(err, "bgpool_task_error")
    expect_match(conditionMessage(err), "signalled an interrupt")
  } else {
    expect_identical(pool_sapply(1:2, signals_interrupt), 1:2)
  }
  # options(warn = 2) on the workers turns warnings into errors there
  pool_evalq(options(warn = 2))
  err <- tryCatch(pool_sapply(1:2, function(i) {
    warning("turned into an error")
    i
  }), error = function(e) e)
  expect_s3_class(err, "bgpool_task_error")
  expect_match(conditionMessage(err), "(converted from warning) turned into an error", fixed = TRUE)
  # and options(warn = -1) ignores them, as R does
  pool_evalq(options(warn = -1))
  expect_silent(res <- pool_sapply(1:2, function(i) {
    warning("ignored")
    i
  }))
  expect_identical(res, 1:2)
  pool_evalq(options(warn = 0))
})

test_that("warnings and errors reach the master as the conditions they were, fields and classes kept", {
  local_pool(2)
  custom_warning <- function(i) {
    warning(structure(class = c("my_warning", "warning", "condition"),
                      list(message = "custom", call = NULL, extra = 42)))
    i
  }
  w <- tryCatch(pool_sapply(1:2, custom_warning), warning = function(w) w)
  expect_s3_class(w, "my_warning")
  expect_identical(w$extra, 42)
  expect_identical(conditionMessage(w), "custom")
  custom_error <- function(i) {
    stop(structure(class = c("my_error", "error", "condition"),
                   list(message = "bad", call = NULL, detail = list(code = 7))))
  }
  err <- tryCatch(pool_sapply(1:2, custom_error), error = function(e) e)
  expect_s3_class(err$errors[[1]], "my_error")
  expect_identical(err$errors[[1]]$detail, list(code = 7))
  # an error whose message is NULL still says something
  no_message <- function(i) stop(structure(class = c("quiet_error", "error", "condition"),
                                           list(message = NULL, call = NULL)))
  err <- tryCatch(pool_sapply(1:2, no_message), error = function(e) e)
  expect_match(conditionMessage(err), "a condition of class quiet_error with no message", fixed = TRUE)
})

test_that(".retry must be a finite whole number; it cannot be Inf", {
  local_pool(1)
  for (bad in list(Inf, -1, NA, "1", c(1, 2), 1e6))
    expect_error(pool_lapply(1:2, identity, .retry = bad), class = "bgpool_bad_argument",
                 info = deparse(bad))
  expect_error(pool_lapply(1:2, identity, .retry = Inf), "from 0 to 1000")
})
