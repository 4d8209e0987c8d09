test_that("init_pool creates a pool of the requested size", {
  suppressMessages(delete_pool())
  withr::defer(suppressMessages(delete_pool()))
  expect_false(pool_exists())
  expect_identical(pool_size(), 0L)
  expect_null(bgpool:::pool_info())

  n <- test_pool_size()
  expect_message(res <- init_pool(n), "Creating background pool")
  expect_null(res)
  expect_invisible(init_pool(n))
  expect_true(pool_exists())
  expect_identical(pool_size(), as.integer(n))

  info <- bgpool:::pool_info()
  expect_type(info$pids, "integer")
  expect_length(info$pids, n)
  expect_true(all(pid_alive(info$pids)))
  expect_true(dir.exists(info$dir))
  expect_identical(format(file.info(info$dir)$mode), "700")

  pids <- pool_call(Sys.getpid)
  expect_type(pids, "list")
  expect_length(pids, n)
  expect_null(names(pids))
  expect_setequal(unlist(pids), info$pids)
  expect_false(Sys.getpid() %in% unlist(pids))
})

test_that("pool_export works from a function environment", {
  local_pool(test_pool_size())
  f <- function() {
    secret_value_bgpool <- c(a = 1.5, b = 2.5)
    pool_export("secret_value_bgpool", envir = environment())
  }
  f()
  expect_false(exists("secret_value_bgpool", envir = globalenv()))
  res <- pool_evalq(secret_value_bgpool)
  expect_identical(res, rep(list(c(a = 1.5, b = 2.5)), test_pool_size()))
  res2 <- pool_sapply(1:3, global_fun(function(i) secret_value_bgpool[["b"]] * i))
  expect_identical(res2, c(2.5, 5, 7.5))
})

test_that("a second init_pool of the same size resets workers but keeps them", {
  n <- test_pool_size()
  local_pool(n)
  pids_before <- unlist(pool_call(Sys.getpid))

  x <- "exported"
  .hidden_bgpool <- 123L
  pool_export(c("x", ".hidden_bgpool"), envir = environment())
  pool_evalq(made_on_worker_bgpool <- 1)
  expect_identical(pool_evalq(exists("x")), rep(list(TRUE), n))
  expect_identical(pool_evalq(x), rep(list("exported"), n))

  expect_no_message(init_pool(n), message = "Creating background pool")
  expect_true(pool_exists())
  expect_identical(pool_size(), as.integer(n))

  expect_identical(pool_evalq(exists("x")), rep(list(FALSE), n))
  expect_identical(pool_evalq(exists(".hidden_bgpool")), rep(list(FALSE), n))
  expect_identical(pool_evalq(exists("made_on_worker_bgpool")), rep(list(FALSE), n))
  expect_identical(pool_evalq(ls(globalenv(), all.names = TRUE)),
                   rep(list(character(0)), n))

  pids_after <- unlist(pool_call(Sys.getpid))
  expect_identical(sort(pids_after), sort(pids_before))
  expect_setequal(pool_pids(), pids_before)
})

test_that("init_pool without restart resets the workers' working directory", {
  n <- test_pool_size()
  newdir <- withr::local_tempdir()
  local_pool(n)
  olddir <- getwd()
  before <- unlist(pool_evalq(normalizePath(getwd())))
  expect_false(any(before == normalizePath(newdir)))
  pids_before <- pool_pids()

  withr::with_dir(newdir, {
    init_pool(n)
    master_wd <- normalizePath(getwd())
  })
  wds <- unlist(pool_evalq(getwd()))
  expect_length(wds, n)
  expect_identical(normalizePath(wds), rep(master_wd, n))
  expect_identical(normalizePath(wds), rep(normalizePath(newdir), n))
  expect_setequal(pool_pids(), pids_before)

  # and back again (also keeps the workers out of newdir before it is removed)
  init_pool(n)
  wds <- unlist(pool_evalq(getwd()))
  expect_identical(normalizePath(wds), rep(normalizePath(olddir), n))
  expect_setequal(pool_pids(), pids_before)
})

test_that("init_pool with a larger size recreates the pool", {
  local_pool(1)
  expect_identical(pool_size(), 1L)
  old <- unlist(pool_call(Sys.getpid))
  expect_length(old, 1L)

  msgs <- capture_messages(init_pool(2))
  expect_true(any(grepl("Creating background pool", msgs, fixed = TRUE)))
  expect_identical(pool_size(), 2L)
  new <- unlist(pool_call(Sys.getpid))
  expect_length(new, 2L)
  expect_length(intersect(new, old), 0L)
  expect_true(wait_pids_gone(old, 5))
})

test_that("init_pool with a smaller size keeps the existing pool", {
  n <- test_pool_size()
  skip_if(n < 2L)
  local_pool(n)
  old <- pool_pids()
  expect_no_message(init_pool(1), message = "Creating background pool")
  expect_identical(pool_size(), as.integer(n))
  expect_setequal(pool_pids(), old)
})

test_that("init_pool(restart = TRUE) recreates the pool", {
  n <- test_pool_size()
  local_pool(n)
  old <- unlist(pool_call(Sys.getpid))
  msgs <- capture_messages(init_pool(n, restart = TRUE))
  expect_true(any(grepl("Creating background pool", msgs, fixed = TRUE)))
  expect_identical(pool_size(), as.integer(n))
  new <- unlist(pool_call(Sys.getpid))
  expect_length(intersect(new, old), 0L)
  expect_true(wait_pids_gone(old, 5))
  expect_true(all(pid_alive(new)))
})

test_that("delete_pool stops workers and removes the socket directory", {
  n <- test_pool_size()
  local_pool(n)
  info <- bgpool:::pool_info()
  expect_true(all(pid_alive(info$pids)))
  expect_true(dir.exists(info$dir))

  expect_message(delete_pool(), "Deleting background pool")
  expect_false(pool_exists())
  expect_identical(pool_size(), 0L)
  expect_null(bgpool:::pool_info())
  expect_true(wait_pids_gone(info$pids, 5))
  expect_false(dir.exists(info$dir))

  expect_silent(delete_pool())
  expect_false(pool_exists())
  expect_identical(pool_size(), 0L)
})

test_that("a pool can be created again after delete_pool", {
  local_pool(1)
  suppressMessages(delete_pool())
  expect_false(pool_exists())
  expect_message(init_pool(1), "Creating background pool")
  expect_true(pool_exists())
  expect_identical(pool_sapply(1:3, function(i) i * 2L), c(2L, 4L, 6L))
})

test_that("init_pool() removes only pool directories whose master has died, judged by their lock, not by pid", {
  skip_on_psock("its pool directories hold no lock; the native core's do")
  skip_if(!nzchar(Sys.which("flock")), "the flock program (util-linux) is not installed")
  skip_without_processx()
  suppressMessages(delete_pool())
  # another session's temporary directory, as in a container sharing /tmp:
  # its pids mean nothing here
  other <- file.path(dirname(tempdir()), paste0("RtmpBgpoolTest", Sys.getpid()))
  dir.create(other)
  withr::defer(unlink(other, recursive = TRUE))
  live <- file.path(other, "bgpool-999999-live01")
  dead <- file.path(other, "bgpool-999998-dead01")
  legacy <- file.path(other, "bgpool-999997-nolock")
  for (d in c(live, dead, legacy)) dir.create(d)
  file.create(file.path(c(live, dead), "lock"))
  holder <- processx::process$new("flock", c(file.path(live, "lock"), "sleep", "60"),
                                  cleanup = TRUE)
  withr::defer(holder$kill())
  deadline <- Sys.time() + 5
  while (!bgpool:::pool_dir_abandoned(dead) || bgpool:::pool_dir_abandoned(live)) {
    if (Sys.time() > deadline) break
    Sys.sleep(0.05)
  }
  expect_false(bgpool:::pool_dir_abandoned(live))
  local_pool(1)
  expect_true(dir.exists(live))
  expect_false(dir.exists(dead))
  expect_true(dir.exists(legacy))  # no lock: not a pool this version can judge
})

test_that("a worker that dies before greeting the master fails init_pool() at once, saying how, leaving nothing", {
  skip_on_psock("BGPOOL_TEST_EXIT_BEFORE_GREETING is a hook of the native worker's start")
  suppressMessages(delete_pool())
  before <- descendant_pids()
  t0 <- Sys.time()
  err <- tryCatch(
    suppressMessages(init_pool(2, rscript_envs = c(BGPOOL_TEST_EXIT_BEFORE_GREETING = "3"),
                               setup_timeout = 60)),
    error = function(e) e)
  expect_lt(elapsed_since(t0), 10)
  expect_s3_class(err, c("bgpool_start_failed", "bgpool_error"))
  expect_match(conditionMessage(err), "exited with status 3 while starting", fixed = TRUE)
  expect_match(conditionMessage(err), "exiting before it greets the master", fixed = TRUE)
  expect_false(pool_exists())
  # no process left behind, zombies included
  expect_true(wait_pids_gone(setdiff(descendant_pids(), before), 5))
  expect_identical(setdiff(child_pids(), before), integer())
})

test_that("an output file the workers cannot open fails init_pool() at once and says which", {
  suppressMessages(delete_pool())
  # a named pipe that nobody reads: R sees a writable file, open() fails
  fifo <- tempfile("bgpool-fifo-")
  skip_if(system2("mkfifo", fifo) != 0L, "mkfifo could not make a named pipe")
  withr::defer(unlink(fifo))
  t0 <- Sys.time()
  err <- tryCatch(suppressMessages(init_pool(2, outfile = fifo)), error = function(e) e)
  expect_lt(elapsed_since(t0), 10)
  expect_s3_class(err, c("bgpool_start_failed", "bgpool_error"))
  expect_match(conditionMessage(err), paste("cannot open the file for its output,", fifo),
               fixed = TRUE)
  expect_false(pool_exists())
})

test_that("a process forked from the master (mcparallel) cannot use the master's pool, may make its own, and disturbs nothing", {
  skip_on_os("windows")
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    job <- parallel::mcparallel({
      used <- tryCatch(pool_lapply(1:2, identity), error = function(e) e)
      inherited <- pool_exists()
      suppressMessages(init_pool(1))
      own <- pool_sapply(1:3, function(i) i * 10)
      own_pid <- bgpool:::pool_info()$pids
      suppressMessages(delete_pool())
      list(message = conditionMessage(used), class = class(used), inherited = inherited,
           own = own, own_pid = own_pid)
    })
    forked <- parallel::mccollect(job)[[1]]
    after <- pool_sapply(1:4, function(i) i + 1)
    children <- function(pid) scan(sprintf("/proc/%d/task/%d/children", pid, pid), quiet = TRUE)
    kids <- children(Sys.getpid())
    save_result(list(forked = forked, after = after, pids = pids,
                     pids_after = bgpool:::pool_info()$pids, kids = kids,
                     grandchildren = unlist(lapply(kids, children))))
  }))
  res <- child_result(child, 60)
  expect_true("bgpool_no_pool" %in% res$forked$class)
  expect_match(res$forked$message, "forked from it", fixed = TRUE)
  expect_false(res$forked$inherited)
  expect_identical(res$forked$own, c(10, 20, 30))
  expect_false(res$forked$own_pid %in% res$pids)
  expect_identical(res$after, c(2, 3, 4, 5))
  expect_identical(res$pids_after, res$pids)
  skip_on_psock("parallel starts its workers detached, not as the master's descendants")
  # the master's one child is its template, whose children are the two workers
  expect_length(res$kids, 1L)
  expect_setequal(res$grandchildren, res$pids)
})

test_that("native workers start without Rcpp, and a task that loads it gets all of it", {
  skip_on_psock("its workers load bgpool's namespace with Rcpp, as parallel's workers load packages")
  n <- local_pool(test_pool_size())
  expect_identical(pool_evalq("Rcpp" %in% loadedNamespaces()), rep(list(FALSE), n))
  loaded <- pool_evalq(requireNamespace("Rcpp", quietly = TRUE) && is.function(Rcpp::sourceCpp) &&
                         methods::isClass("C++Object", where = asNamespace("Rcpp")))
  expect_identical(loaded, rep(list(TRUE), n))
  expect_identical(pool_sapply(1:4, global_fun(function(i) i + 1)), c(2, 3, 4, 5))
})

test_that("a task can start a pool of its own and delete it", {
  n <- local_pool(test_pool_size())
  inner <- pool_call(global_fun(function() {
    suppressMessages(bgpool::init_pool(1))
    on.exit(suppressMessages(bgpool::delete_pool()))
    list(values = bgpool::pool_sapply(1:3, function(i) i * 2),
         pid = bgpool::pool_call(Sys.getpid)[[1]], mine = Sys.getpid())
  }))
  for (got in inner) {
    expect_identical(got$values, c(2, 4, 6))
    expect_false(identical(got$pid, got$mine))
    expect_true(wait_pids_gone(got$pid))
  }
  expect_identical(pool_sapply(1:2, global_fun(function(i) -i)), c(-1L, -2L))
})
