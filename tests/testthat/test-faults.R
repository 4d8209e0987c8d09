# Faults provoked for real: workers killed, crashed or exiting mid-task,
# retries, time limits, a master that dies, unserializable results, and
# what tasks print or warn. Destructive cases run in a child R master
# (helper-processes.R) under a time limit, so a hang or a crash fails only
# its own test.

# --- a worker killed from outside while its task runs ------------------------

test_that("a worker SIGKILLed mid-task fails the call at once with bgpool_worker_died, and is replaced with the exports", {
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    wd <- file.path(tempdir(), "master-wd")
    dir.create(wd)
    setwd(wd)
    exported_a <- 42
    exported_b <- letters
    pool_export(c("exported_a", "exported_b"))
    say("PIDS", paste(pids, collapse = " "))
    say("LOG1", bgpool:::pool_info()$logs[1])
    t0 <- Sys.time()
    err <- tryCatch(
      pool_lapply(1:4, function(i) {
        cat("task", i, "running\n")
        Sys.sleep(30)
        i
      }, chunk.size = 1),
      error = function(e) e)
    say("CAUGHT", since(t0))
    size <- pool_size()
    t1 <- Sys.time()
    squares <- pool_sapply(1:8, function(i) i^2)
    next_call <- since(t1)
    got <- pool_evalq(list(a = get("exported_a"), b = get("exported_b"),
                           wd = normalizePath(getwd())))
    save_result(list(err = err, pids = pids, size = size, squares = squares,
                     next_call = next_call, pids_after = bgpool:::pool_info()$pids,
                     got = got, wd = normalizePath(getwd())))
  }))
  pids <- child_numbers(child, "PIDS", 60)
  # kill worker 1 once its task has started
  log1 <- sub("^LOG1 ", "", child_wait_for(child, "^LOG1 ")$line)
  deadline <- Sys.time() + 10
  while (!any(grepl("running", tryCatch(readLines(log1, warn = FALSE), error = function(e) ""))) &&
         Sys.time() < deadline) Sys.sleep(0.02)
  expect_true(any(grepl("running", readLines(log1, warn = FALSE))), info = "worker 1 never started its task")
  tools::pskill(pids[1], tools::SIGKILL)
  killed_at <- Sys.time()
  caught <- child_wait_for(child, "^CAUGHT", 15)
  expect_lt(as.numeric(difftime(caught$time, killed_at, units = "secs")), 2)

  res <- child_result(child, 30)
  err <- res$err
  expect_s3_class(err, c("bgpool_worker_died", "bgpool_error", "error"))
  expect_identical(as.integer(err$worker), 1L)
  expect_identical(as.integer(err$pid), as.integer(pids[1]))
  expect_match(err$how, died_how("was killed by SIGKILL"), fixed = TRUE)
  msg <- conditionMessage(err)
  expect_match(msg, "worker 1 ", fixed = TRUE)
  expect_match(msg, sprintf("pid %d", pids[1]), fixed = TRUE)
  expect_match(msg, died_how("was killed by SIGKILL"), fixed = TRUE)
  expect_true(length(err$tasks) >= 1 && all(err$tasks %in% 1:4))
  expect_match(msg, sprintf("element %d", err$tasks[1]), fixed = TRUE)
  # its last output: what the task printed before it was killed
  expect_match(err$output, sprintf("task %d running", err$tasks[1]), fixed = TRUE)
  expect_match(msg, sprintf("task %d running", err$tasks[1]), fixed = TRUE)
  expect_length(err$results, 4L)
  expect_true(all(err$tasks %in% err$unfinished))
  for (i in setdiff(1:4, err$unfinished)) expect_identical(err$results[[i]], i)
  expect_true(all(c("failed", "errors", "output") %in% names(unclass(err))))

  # replaced at the next call: same size, new process for worker 1 only
  expect_identical(res$size, 2L)
  expect_identical(res$squares, (1:8)^2)
  expect_lt(res$next_call, 5)
  expect_length(res$pids_after, 2L)
  expect_false(pids[1] %in% res$pids_after)
  # (the psock backend cannot cancel the other worker's task: it replaces it too)
  if (!on_psock()) expect_identical(as.integer(res$pids_after[2]), as.integer(pids[2]))
  expect_false(pid_alive(pids[1]))
  # every worker has everything exported since init_pool(); the replacement
  # runs in the master's working directory (changed after init_pool())
  expect_length(res$got, 2L)
  for (g in res$got) {
    expect_identical(g$a, 42)
    expect_identical(g$b, letters)
  }
  expect_identical(res$got[[1]]$wd, res$wd)
})

# --- a task that ends its own worker ----------------------------------------

# Child code: worker dies in element 3 ("c") of a pool_map over a character
# vector, in the way `kind` says, after printing a last line.
self_death_child <- function(kind) {
  bquote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    wd <- file.path(tempdir(), "master-wd")
    dir.create(wd)
    setwd(wd)
    marker_value <- "exported before the death"
    pool_export("marker_value")
    f <- function(name, i) {
      if (i == 3L) {
        cat("last words of element", i, "\n")
        flush(stdout())
        if (.(kind) == "sigkill") tools::pskill(Sys.getpid(), tools::SIGKILL)
        if (.(kind) == "quit") quit(status = 3)
        if (.(kind) == "segv") tools::pskill(Sys.getpid(), 11L)  # SIGSEGV on Linux
        Sys.sleep(10)
      }
      Sys.sleep(0.2)
      toupper(name)
    }
    t0 <- Sys.time()
    err <- tryCatch(pool_map(f, name = letters[1:6], i = 1:6), error = function(e) e)
    elapsed <- since(t0)
    size <- pool_size()
    products <- pool_map(function(x, y) x * y, 1:4, 5:8)
    got <- pool_evalq(list(marker = get("marker_value"), wd = normalizePath(getwd())))
    save_result(list(err = err, elapsed = elapsed, pids = pids, size = size,
                     products = products, got = got, wd = normalizePath(getwd()),
                     pids_after = bgpool:::pool_info()$pids))
  })
}

check_self_death <- function(kind, how_pattern, output_pattern) {
  child <- local_r_child(self_death_child(kind))
  res <- child_result(child, 60)
  err <- res$err
  expect_s3_class(err, c("bgpool_worker_died", "bgpool_error", "error"))
  expect_false(inherits(err, "bgpool_task_timeout"))
  # the element was running for at most a fraction of a second when it died
  expect_lt(res$elapsed, 2.5)
  msg <- conditionMessage(err)
  expect_match(msg, "element 3 (\"c\")", fixed = TRUE)
  expect_true(err$pid %in% res$pids)
  expect_identical(as.integer(err$worker), match(err$pid, res$pids))
  expect_match(msg, sprintf("worker %d ", err$worker), fixed = TRUE)
  expect_match(msg, sprintf("pid %d", err$pid), fixed = TRUE)
  expect_match(err$how, died_how(how_pattern))
  expect_match(msg, died_how(how_pattern))
  expect_match(err$output, output_pattern)
  expect_match(msg, output_pattern)
  expect_identical(err$tasks[1], 3)
  expect_length(err$results, 6L)
  expect_true(3L %in% err$unfinished)
  finished <- setdiff(1:6, err$unfinished)
  for (i in finished) expect_identical(err$results[[i]], toupper(letters[i]))
  expect_length(err$failed, 0L)
  expect_length(err$errors, 0L)
  expect_false(pid_alive(err$pid))

  # the pool replaced the dead worker and gives the right answers
  expect_identical(res$size, 2L)
  expect_identical(res$products, list(5L, 12L, 21L, 32L))
  expect_length(res$pids_after, 2L)
  expect_false(err$pid %in% res$pids_after)
  if (!on_psock()) expect_true(setdiff(res$pids, err$pid) %in% res$pids_after)
  expect_length(res$got, 2L)
  for (g in res$got) expect_identical(g$marker, "exported before the death")
  # the replacement runs in the master's working directory
  expect_identical(res$got[[err$worker]]$wd, res$wd)
}

test_that("a task that SIGKILLs its own worker gives bgpool_worker_died naming the element", {
  check_self_death("sigkill", "was killed by SIGKILL", "last words of element 3")
})

test_that("a task that calls quit(status = 3) gives bgpool_worker_died with the exit status", {
  check_self_death("quit", "exited with status 3", "last words of element 3")
})

test_that("a segfault in a task gives bgpool_worker_died with R's crash report", {
  # R's SIGSEGV handler prints "*** caught segfault ***", a traceback and
  # "An irrecoverable exception occurred. R is aborting now ...", then dies
  # by SIGSEGV or SIGABRT. The error's output must show that it was a
  # segfault: R's "caught segfault" line, not only the traceback's end.
  # (the psock backend shows the last 20 lines of its one shared log,
  # which hold only the traceback's end)
  check_self_death("segv", "SIGSEGV|SIGABRT", if (on_psock()) "R is aborting now" else "caught segfault")
})

# --- retries ----------------------------------------------------------------

test_that(".retry re-runs elements lost to a dead worker; task errors are never retried", {
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    kill_once <- function(i, flag) {
      if (i == 5L && !file.exists(flag)) {
        file.create(flag)
        tools::pskill(Sys.getpid(), tools::SIGKILL)
        Sys.sleep(10)
      }
      Sys.sleep(0.05)
      i * 10
    }
    flag1 <- tempfile()
    t0 <- Sys.time()
    r1 <- tryCatch(pool_lapply(1:8, kill_once, flag = flag1, .retry = 1), error = function(e) e)
    e1 <- since(t0)
    # the lost element ran again on the other worker; the next call
    # replaces the one that died
    invisible(pool_sapply(1:2, identity))
    pids1 <- bgpool:::pool_info()$pids
    flag2 <- tempfile()
    options(bgpool.retry = 1)
    r2 <- tryCatch(pool_map(kill_once, 1:6, MoreArgs = list(flag = flag2)), error = function(e) e)
    flag3 <- tempfile()
    r3 <- tryCatch(pool_sapply(1:6, kill_once, flag = flag3), error = function(e) e)
    options(bgpool.retry = NULL)
    count <- tempfile()
    r4 <- tryCatch(pool_sapply(1:4, function(i, count) {
      if (i == 2L) {
        cat("run\n", file = count, append = TRUE)
        stop("the task's own error")
      }
      i
    }, count = count, .retry = 2), error = function(e) e)
    runs <- length(readLines(count))
    ok <- pool_sapply(1:3, function(i) i + 100)
    save_result(list(r1 = r1, e1 = e1, killed = c(file.exists(flag1), file.exists(flag2), file.exists(flag3)),
                     pids = pids, pids1 = pids1, r2 = r2, r3 = r3, r4 = r4, runs = runs, ok = ok,
                     size = pool_size()))
  }))
  res <- child_result(child, 90)
  expect_identical(res$killed, c(TRUE, TRUE, TRUE))
  expect_identical(res$r1, as.list((1:8) * 10))
  expect_lt(res$e1, 8)
  # the worker that died was replaced
  expect_length(intersect(res$pids, res$pids1), 1L)
  expect_identical(res$r2, as.list((1:6) * 10))
  expect_identical(res$r3, (1:6) * 10)
  expect_s3_class(res$r4, c("bgpool_task_error", "bgpool_error", "error"))
  expect_false(inherits(res$r4, "bgpool_worker_died"))
  expect_match(conditionMessage(res$r4), "element 2", fixed = TRUE)
  expect_match(conditionMessage(res$r4), "the task's own error", fixed = TRUE)
  expect_identical(res$runs, 1L)
  expect_identical(res$ok, c(101, 102, 103))
  expect_identical(res$size, 2L)
})

# --- time limits ------------------------------------------------------------

test_that(".timeout stops a task that runs too long, keeps the other results, and the pool recovers", {
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    t0 <- Sys.time()
    e1 <- tryCatch(pool_sapply(1:4, function(i) {
      if (i == 2L) Sys.sleep(30)
      i * 2
    }, .timeout = 1), error = function(e) e)
    el1 <- since(t0)
    size <- pool_size()
    after <- pool_sapply(1:6, function(i) i - 1L)
    pids_after <- bgpool:::pool_info()$pids
    options(bgpool.timeout = 1)
    t0 <- Sys.time()
    e2 <- tryCatch(pool_lapply(1:3, function(i) {
      if (i == 3L) Sys.sleep(30)
      i
    }), error = function(e) e)
    el2 <- since(t0)
    options(bgpool.timeout = NULL)
    slow_ok <- pool_lapply(1:2, function(i) {
      Sys.sleep(1.5)
      i
    })
    save_result(list(pids = pids, e1 = e1, el1 = el1, size = size,
                     after = after, pids_after = pids_after, e2 = e2, el2 = el2,
                     slow_ok = slow_ok, size2 = pool_size()))
  }))
  res <- child_result(child, 90)
  e1 <- res$e1
  expect_s3_class(e1, c("bgpool_task_timeout", "bgpool_worker_died", "bgpool_error", "error"))
  expect_gt(res$el1, 0.9)
  expect_lt(res$el1, 2.5)
  expect_match(conditionMessage(e1), "element 2", fixed = TRUE)
  expect_match(conditionMessage(e1), "time limit", fixed = TRUE)
  expect_identical(e1$tasks[1], 2)
  expect_true(wait_pids_gone(e1$pid, 2))
  expect_true(2L %in% e1$unfinished)
  finished <- setdiff(1:4, e1$unfinished)
  expect_gte(length(finished), 1L)
  for (i in finished) expect_identical(e1$results[[i]], i * 2)
  # only what the stopped worker held is unfinished
  expect_true(all(e1$unfinished %in% e1$tasks))
  expect_identical(res$size, 2L)
  expect_identical(res$after, 0:5)
  expect_length(res$pids_after, 2L)
  expect_false(e1$pid %in% res$pids_after)

  expect_s3_class(res$e2, c("bgpool_task_timeout", "bgpool_worker_died"))
  expect_match(conditionMessage(res$e2), "element 3", fixed = TRUE)
  expect_lt(res$el2, 2.5)
  expect_identical(res$slow_ok, list(1L, 2L))
  expect_identical(res$size2, 2L)
})

# --- the master dies --------------------------------------------------------

test_that("workers exit when their master is SIGKILLed, and its directory goes at the next pool", {
  child <- local_r_child(quote({
    init_pool(2)
    info <- bgpool:::pool_info()
    say("PIDS", paste(info$pids, collapse = " "))
    say("DIR", info$dir)
    say("TEMPDIR", tempdir())
    Sys.sleep(120)
  }))
  pids <- child_numbers(child, "PIDS", 60)
  dir <- sub("^DIR ", "", child_wait_for(child, "^DIR ")$line)
  child_tempdir <- sub("^TEMPDIR ", "", child_wait_for(child, "^TEMPDIR ")$line)
  withr::defer(unlink(child_tempdir, recursive = TRUE))
  expect_true(all(pid_alive(pids)))
  expect_true(dir.exists(dir))
  expect_identical(normalizePath(dirname(child_tempdir)), normalizePath(dirname(tempdir())))

  # every process the master started (workers, and any helper process);
  # parallel starts the psock backend's workers detached
  family <- if (on_psock()) pids else descendant_pids(child$process$get_pid())
  expect_true(all(pids %in% family))
  child$process$kill()  # SIGKILL, to the master only
  expect_true(wait_pids_gone(pids, 2), info = "workers still alive 2 s after their master died")
  expect_true(wait_pids_gone(family, 0.5),
              info = paste("still alive:", paste(family[pid_alive(family)], collapse = " ")))
  # the master could not clean up
  expect_true(dir.exists(dir))
  skip_on_psock("a directory is known abandoned by a lock its master held, which the native core takes")
  expect_match(basename(dir), sprintf("^bgpool-%d-", child$process$get_pid()))
  # the next pool in a session with the same temporary root removes it
  suppressMessages(init_pool(1, restart = TRUE))
  withr::defer(suppressMessages(delete_pool()))
  expect_false(dir.exists(dir))
  expect_identical(pool_sapply(1:3, function(i) i), 1:3)
})

# --- values that cannot travel ----------------------------------------------

test_that("results that cannot be serialized (external pointers, connections) do not break the pool", {
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    describe <- function(r) {
      if (inherits(r, "error"))
        return(list(error = TRUE, class = class(r), message = conditionMessage(r)))
      list(error = FALSE, types = vapply(r, typeof, ""),
           null_pointers = vapply(r, function(x) typeof(x) == "externalptr" &&
                                    identical(x, methods::new("externalptr")), NA),
           classes = lapply(r, class))
    }
    t0 <- Sys.time()
    r1 <- tryCatch(pool_lapply(1:3, function(i) methods::new("externalptr")), error = function(e) e)
    r2 <- tryCatch(pool_lapply(1:3, function(i) {
      con <- file(tempfile(), "w")
      close(con)
      con
    }), error = function(e) e)
    r3 <- tryCatch(pool_lapply(1:4, function(i) if (i %% 2L) methods::new("externalptr") else i),
                   error = function(e) e)
    r4 <- tryCatch(pool_call(function() methods::new("externalptr")), error = function(e) e)
    elapsed <- since(t0)
    ok <- pool_sapply(1:10, sqrt)
    save_result(list(r1 = describe(r1), r2 = describe(r2), r3 = describe(r3), r3_values = if (is.list(r3)) r3[c(2, 4)],
                     r4 = describe(r4), elapsed = elapsed, ok = ok, pids = pids,
                     pids_after = bgpool:::pool_info()$pids))
  }))
  res <- child_result(child, 60)
  expect_identical(attr(res, "status"), 0L)
  expect_lt(res$elapsed, 10)
  check <- function(d, n) {
    if (d$error) {
      # a clear error of the package's own
      expect_true("bgpool_error" %in% d$class)
      expect_match(d$message, "serializ|pointer|connection", ignore.case = TRUE)
    } else {
      expect_length(d$types, n)
    }
  }
  check(res$r1, 3)
  if (!res$r1$error) expect_true(all(res$r1$null_pointers))
  check(res$r2, 3)
  if (!res$r2$error) expect_true(all(vapply(res$r2$classes, function(cl) "connection" %in% cl, NA)))
  check(res$r3, 4)
  if (!res$r3$error) {
    expect_true(all(res$r3$null_pointers[c(1, 3)]))
    expect_identical(res$r3_values, list(2L, 4L))
  }
  check(res$r4, 2)
  expect_identical(res$ok, sqrt(1:10))
  # no worker died over it
  expect_identical(res$pids_after, res$pids)
})

test_that("pool_export() of a missing variable names it", {
  local_pool(2)
  with_time_limit(30, {
    expect_error(pool_export("no_such_var"), class = "bgpool_bad_argument", regexp = "no_such_var")
    exists_here <- 1
    expect_error(pool_export(c("exists_here", "no_such_var_either"), envir = environment()),
                 class = "bgpool_bad_argument", regexp = "\"no_such_var_either\"")
    expect_identical(pool_sapply(1:3, function(i) i), 1:3)
  })
})

# --- warnings and output ----------------------------------------------------

test_that("a task's warning reaches the master as a warning, with the result returned", {
  local_pool(2)
  with_time_limit(30, {
    expect_warning(
      r <- pool_sapply(1:3, function(i) {
        if (i == 2L) warning("careful")
        i * 10
      }),
      "careful")
    expect_identical(r, c(10, 20, 30))
    expect_warning(
      r2 <- pool_map(function(x) {
        if (x == "q") warning("careful with ", x)
        x
      }, c("p", "q")),
      "careful with q")
    expect_identical(r2, list(p = "p", q = "q"))
  })
})

test_that("what tasks print stays off the master's console and is shown by pool_output()", {
  local_pool(2)
  with_time_limit(30, {
    expect_silent(
      r <- pool_lapply(1:4, function(i) {
        cat("cat-marker", i, "\n")
        print(paste("print-marker", i))
        message("message-marker ", i)
        i
      }))
    expect_identical(r, as.list(1:4))
    out <- pool_output()
    expect_s3_class(out, "bgpool_output")
    expect_type(unclass(out), "character")
    expect_length(out, 2L)
    text <- paste(unclass(out), collapse = "\n")
    for (i in 1:4) {
      expect_match(text, sprintf("cat-marker %d", i), fixed = TRUE)
      expect_match(text, sprintf("print-marker %d", i), fixed = TRUE)
      expect_match(text, sprintf("message-marker %d", i), fixed = TRUE)
    }
  })
})

test_that("what tasks print never reaches the master process's stdout or stderr", {
  child <- local_r_child(quote({
    suppressMessages(init_pool(2))
    say("BEFORE")
    r <- pool_lapply(1:4, function(i) {
      cat("cat-marker", i, "\n")
      print(paste("print-marker", i))
      message("message-marker ", i)
      system("echo system-marker")
      i
    })
    pool_evalq(cat("evalq-marker\n"))
    say("AFTER")
    save_result(list(r = r, output = paste(unclass(pool_output()), collapse = "\n")))
  }))
  res <- child_result(child, 60)
  expect_identical(res$r, as.list(1:4))
  console <- attr(res, "output")
  expect_match(console, "AFTER", fixed = TRUE)
  expect_false(grepl("marker", console), info = console)
  for (m in c("cat-marker", "print-marker", "message-marker", "system-marker", "evalq-marker"))
    expect_match(res$output, m, fixed = TRUE)
})

test_that("a worker's log stays small however much its task prints (option bgpool.log_limit)", {
  local_pool(1)
  withr::local_options(bgpool.log_limit = 2e5)
  log <- bgpool:::pool_info()$logs[1]
  chatty <- function(seconds) {
    end <- Sys.time() + seconds
    while (Sys.time() < end) cat(strrep("x", 1000), "\n")
    "done"
  }
  expect_identical(pool_sapply(5, chatty), "done")
  Sys.sleep(2.1)  # the log is looked after at most every 2 seconds
  expect_identical(pool_sapply(1, function(i) i), 1)
  expect_lte(file.size(log), 2e5)
  tail <- pool_output()[[1]]
  expect_match(tail, "xxxx", fixed = TRUE)
  expect_match(paste(readLines(log, n = 1L), collapse = ""), "earlier output", fixed = TRUE)
})
