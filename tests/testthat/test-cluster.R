# pool_cluster(): the pool as a parallel cluster, and through it foreach
# (doParallel) and future, each run for real against PSOCK's answers.

test_that("parallel's functions give PSOCK's results on the pool's cluster", {
  local_pool()
  cl <- pool_cluster()
  ref <- local_psock()
  expect_s3_class(cl, if (on_psock()) c("SOCKcluster", "cluster") else c("bgpool_cluster", "cluster"))
  expect_length(cl, pool_size())
  expect_identical(pool_cluster(), cl)

  square <- global_fun(function(i) i^2)
  expect_identical(parallel::parLapply(cl, 1:25, square), parallel::parLapply(ref, 1:25, square))
  expect_identical(parallel::parSapply(cl, c(a = 1, b = 2), square),
                   parallel::parSapply(ref, c(a = 1, b = 2), square))
  expect_identical(parallel::clusterMap(cl, function(a, b) a * b, 1:5, 6:10),
                   parallel::clusterMap(ref, function(a, b) a * b, 1:5, 6:10))
  expect_identical(parallel::clusterApplyLB(cl, 1:7, square),
                   parallel::clusterApplyLB(ref, 1:7, square))

  x <- 41
  parallel::clusterExport(cl, "x", envir = environment())
  expect_identical(parallel::clusterEvalQ(cl, x + 1), rep(list(42), pool_size()))
  pids <- unlist(parallel::clusterCall(cl, Sys.getpid))
  expect_setequal(pids, pool_pids())
  # the cluster and pool_*() share the workers and what they hold
  expect_identical(pool_evalq(x), rep(list(41), pool_size()))
})

test_that("clusterApplyLB balances: slow calls do not hold up the other node", {
  local_pool(2)
  cl <- pool_cluster()
  where <- parallel::clusterApplyLB(cl, c(1, 0.05, 0.05, 0.05, 0.05), function(s) {
    Sys.sleep(s)
    Sys.getpid()
  })
  # the first node sleeps a second while the other takes all the short ones
  expect_identical(length(unique(unlist(where[-1]))), 1L)
  expect_false(where[[1]] == where[[2]])
})

test_that("clusterSetRNGStream gives the workers PSOCK's streams", {
  # it leaves the session's generator kind as L'Ecuyer-CMRG
  local_rng_unchanged()
  local_pool()
  cl <- pool_cluster()
  ref <- local_psock()
  draw <- function() parallel::clusterEvalQ(cl, runif(2))
  parallel::clusterSetRNGStream(cl, 2024)
  parallel::clusterSetRNGStream(ref, 2024)
  ours <- parallel::clusterEvalQ(cl, runif(2))
  expect_identical(ours, parallel::clusterEvalQ(ref, runif(2)))
  parallel::clusterSetRNGStream(cl, 2024)
  expect_identical(draw(), ours)
})

test_that("a node's error and warning are reported as parallel reports them", {
  local_pool(2)
  cl <- pool_cluster()
  expect_error(parallel::clusterEvalQ(cl, stop("boom")), "2 nodes produced errors; first error: boom")
  skip_on_psock("its cluster is parallel's own, whose nodes keep their warnings, as makeCluster()'s do")
  warned <- character()
  res <- withCallingHandlers(parallel::clusterEvalQ(cl, { warning("careful"); 1 }),
                             warning = function(w) {
                               warned <<- c(warned, conditionMessage(w))
                               invokeRestart("muffleWarning")
                             })
  expect_identical(warned, c("careful", "careful"))
  expect_identical(res, list(1, 1))
})

test_that("a worker's death is a node's error, and the next call replaces it", {
  skip_on_psock("its cluster is parallel's own: a node that dies fails as parallel fails it, and pool_cluster() gives the replacement")
  local_pool(2)
  cl <- pool_cluster()
  pids <- pool_pids()
  err <- expect_error(parallel::clusterCall(cl, function(i) if (Sys.getpid() == i) quit(status = 3) else 1,
                                            pids[1]),
                      "one node produced an error")
  expect_match(conditionMessage(err), sprintf("worker 1 \\(pid %d\\) exited with status 3", pids[1]))
  expect_true(wait_pids_gone(pids[1]))
  # the next call replaces the worker and the cluster goes on
  again <- unlist(parallel::clusterCall(cl, Sys.getpid))
  expect_identical(again[2], pids[2])
  expect_false(again[1] == pids[1])
  expect_pool_consistent()
})

test_that("foreach runs on the pool through doParallel", {
  skip_if_not_installed("foreach")
  skip_if_not_installed("doParallel")
  local_pool()
  doParallel::registerDoParallel(pool_cluster())
  withr::defer(foreach::registerDoSEQ())
  `%dopar%` <- foreach::`%dopar%`
  y <- 10
  res <- foreach::foreach(i = 1:20, .combine = c) %dopar% { i + y }
  expect_identical(res, 11:30 + 0)
  expect_identical(foreach::getDoParWorkers(), pool_size())
  pids <- foreach::foreach(i = 1:8, .combine = c) %dopar% Sys.getpid()
  expect_true(all(pids %in% pool_pids()))
  expect_error(foreach::foreach(i = 1:3) %dopar% if (i == 2) stop("bad element") else i,
               "bad element")
})

test_that("futures run on the pool: asynchronously, more futures than workers, resolved() without warnings", {
  skip_if_not_installed("future")
  local_pool(2)
  old <- future::plan(future::cluster, workers = pool_cluster())
  withr::defer(future::plan(old))

  slow <- future::future({ Sys.sleep(1); Sys.getpid() })
  t0 <- Sys.time()
  expect_false(future::resolved(slow))
  expect_lt(elapsed_since(t0), 0.5)  # the master was not held up
  expect_true(future::value(slow) %in% pool_pids())

  fs <- lapply(1:7, function(i) future::future(i * 10))
  expect_identical(unlist(future::value(fs)), (1:7) * 10)

  z <- 5
  f <- future::future(z * 2)
  expect_no_warning(while (!future::resolved(f)) Sys.sleep(0.01))
  expect_identical(future::value(f), 10)

  failing <- future::future(stop("inside the future"))
  expect_error(future::value(failing), "inside the future")
})

test_that("a pool_*() call while futures run waits for them; their results stay collectable", {
  skip_on_psock("a pool call refuses to run while futures are uncollected (tested below)")
  skip_if_not_installed("future")
  local_pool(2)
  old <- future::plan(future::cluster, workers = pool_cluster())
  withr::defer(future::plan(old))
  fs <- lapply(1:2, function(i) future::future({ Sys.sleep(0.5); i }))
  expect_identical(pool_sapply(1:4, function(i) -i), -(1:4))
  expect_true(all(vapply(fs, future::resolved, NA)))
  expect_identical(unlist(future::value(fs)), 1:2)
})

test_that("psock backend: a pool_*() call while futures are uncollected says so; once they are, it runs", {
  skip_if_not(on_psock(), "the psock backend's behaviour (the native one waits, tested above)")
  skip_if_not_installed("future")
  local_pool(2)
  old <- future::plan(future::cluster, workers = pool_cluster())
  withr::defer(future::plan(old))
  fs <- lapply(1:2, function(i) future::future({ Sys.sleep(0.5); i }))
  err <- expect_error(pool_sapply(1:4, function(i) -i), class = "bgpool_cluster_busy")
  expect_match(conditionMessage(err), "future::value()", fixed = TRUE)
  expect_identical(unlist(future::value(fs)), 1:2)
  expect_identical(pool_sapply(1:4, function(i) -i), -(1:4))
})

test_that("stopCluster() deletes the pool; the old cluster then says what to do", {
  init_pool(2)
  cl <- pool_cluster()
  pids <- pool_pids()
  con <- cl[[1]]$con
  expect_true(isOpen(con))
  # called from the global environment, as users do: the method must be
  # registered, not only visible from bgpool's namespace
  eval(quote(parallel::stopCluster(cl)), list(cl = cl), globalenv())
  expect_false(pool_exists())
  expect_true(wait_pids_gone(pids))
  skip_on_psock("its cluster is parallel's own, which knows nothing of the pool once deleted")
  expect_output(print(cl), "pool has been deleted")
  expect_error(parallel::clusterEvalQ(cl, 1), "call init_pool\\(\\)|create one with init_pool\\(\\)",
               class = "bgpool_no_pool")
  # the nodes' connections were closed with the pool
  expect_error(isOpen(con), "invalid connection")
  # a new pool has a new cluster
  local_pool(2)
  expect_false(identical(pool_cluster(), cl))
  expect_identical(parallel::clusterEvalQ(pool_cluster(), 1), list(1, 1))
})

# The child master of the two tests below: the pool's cluster through
# parallel, foreach and future (with resolved() polling a node), then the
# TCP sockets its processes hold.
cluster_without_tcp <- quote({
  init_pool(2)
  cl <- pool_cluster()
  a <- parallel::parSapply(cl, 1:4, function(i) i^2)
  doParallel::registerDoParallel(cl)
  b <- foreach::`%dopar%`(foreach::foreach(i = 1:3, .combine = c), i * 3)
  future::plan(future::cluster, workers = cl)
  f <- future::future({ Sys.sleep(0.5); 42 })
  polled <- future::resolved(f)
  c <- future::value(f)
  inodes <- function(pid) {
    fds <- list.files(file.path("/proc", pid, "fd"), full.names = TRUE)
    t <- suppressWarnings(vapply(fds, Sys.readlink, ""))
    sub("^socket:\\[([0-9]+)\\]$", "\\1", grep("^socket:", t, value = TRUE))
  }
  held <- unlist(lapply(c(Sys.getpid(), bgpool:::pool_info()$pids), inodes))
  save_result(list(a = a, b = b, c = c, polled = polled, held = held))
})

test_that("the pool's cluster runs parallel, foreach and future without any TCP socket", {
  skip_on_psock("it runs over localhost TCP, as parallel's socket cluster does")
  skip_if_not_installed("foreach")
  skip_if_not_installed("doParallel")
  skip_if_not_installed("future")
  child <- local_r_child(cluster_without_tcp)
  res <- child_result(child, 60)
  expect_identical(res$a, c(1, 4, 9, 16))
  expect_identical(res$b, c(3, 6, 9))
  expect_identical(res$c, 42)
  expect_false(res$polled)
  expect_gt(length(res$held), 2L)
  expect_identical(intersect(res$held, tcp_inodes()), character())
})

test_that("strace sees no AF_INET or AF_INET6 socket made by the master or its workers", {
  skip_on_psock("it runs over localhost TCP, as parallel's socket cluster does")
  skip_if_not_installed("foreach")
  skip_if_not_installed("doParallel")
  skip_if_not_installed("future")
  strace <- Sys.which("strace")
  skip_if(!nzchar(strace), "strace is not installed (.ci/tools.sh installs it from Debian)")
  log <- tempfile(fileext = ".log")
  script <- tempfile(fileext = ".R")
  writeLines(c("suppressPackageStartupMessages(library(bgpool))",
               "save_result <- function(x) invisible(x)",
               deparse(cluster_without_tcp)), script)
  status <- system2(strace, c("-f", "-e", "trace=socket", "-o", log,
                              file.path(R.home("bin"), "Rscript"), script),
                    stdout = FALSE, stderr = FALSE,
                    env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":")))
  calls <- readLines(log)
  skip_if(status != 0 && !any(grepl("socket\\(", calls)),
          sprintf("strace could not trace here (exit status %d)", status))
  expect_identical(status, 0L)
  sockets <- grep("socket\\(", calls, value = TRUE)
  expect_true(any(grepl("AF_UNIX", sockets)))
  expect_identical(grep("AF_INET", sockets, value = TRUE), character())
})

test_that("a node's connection polls ready exactly when a reply waits to be read", {
  local_pool(2)
  cl <- pool_cluster()
  con <- cl[[1]]$con
  expect_false(socketSelect(list(con), timeout = 0.2))
  parallel:::sendCall(cl[[1]], function() { Sys.sleep(0.5); 7 }, list())
  expect_false(socketSelect(list(con), timeout = 0))
  expect_true(socketSelect(list(con), timeout = 5))
  expect_identical(parallel:::recvResult(cl[[1]]), 7)
  expect_false(socketSelect(list(con), timeout = 0.2))
})
