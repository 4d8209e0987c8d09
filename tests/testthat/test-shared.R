# Large exports travel through shared memory segments mapped copy-on-write.

fd_targets <- function(pid = Sys.getpid()) {
  fds <- list.files(file.path("/proc", pid, "fd"), full.names = TRUE)
  vapply(fds, function(f) tryCatch(Sys.readlink(f), error = function(e) ""), "")
}
memfd_count <- function(pid = Sys.getpid()) sum(grepl("memfd:bgpool", fd_targets(pid)))
# Evaluated on the workers: how many mappings of segments they hold.
# (Through the cluster: a pool_evalq() would be recorded as set-up, which
# keeps the exports before it for replay.)
worker_memfd_maps <- function() {
  unlist(parallel::clusterEvalQ(pool_cluster(), sum(grepl("memfd:bgpool", readLines("/proc/self/maps")))))
}

test_that("every shareable vector type round-trips identically through shared memory", {
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  n <- 5000
  values <- list(
    dbl = c(runif(n - 4), NA, NaN, -0, Inf),
    int = c(sample.int(1000, n - 1, replace = TRUE), NA),
    lgl = c(rep(c(TRUE, FALSE), length.out = n - 1), NA),
    raw = as.raw(sample(0:255, n, replace = TRUE)),
    cpl = complex(real = runif(n), imaginary = runif(n)),
    mat = matrix(runif(n), 50, dimnames = list(NULL, paste0("c", 1:100))),
    named = stats::setNames(seq_len(n) + 0.5, paste0("n", seq_len(n))),
    fac = factor(sample(letters, n, replace = TRUE)),
    dates = as.Date("2020-01-01") + 0:(n - 1)
  )
  env <- list2env(values)
  pool_export(names(values), envir = env)
  for (name in names(values)) {
    got <- pool_call(get, name, envir = globalenv())
    expect_identical(got[[1]], values[[name]], info = name)
    expect_identical(got[[2]], values[[name]], info = name)
  }
  # the workers really hold shared vectors, and serializing one (here, as a
  # result sent back above, or with saveRDS) writes its values
  expect_true(all(worker_memfd_maps() >= 9L))
  path <- tempfile(fileext = ".rds")
  pool_call(function(p) saveRDS(dbl, p), path)
  expect_identical(readRDS(path), values$dbl)
})

test_that("a worker that modifies its shared copy changes nobody else's", {
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  assign("shared_vec", as.numeric(1:1e5), envir = globalenv())
  withr::defer(rm("shared_vec", envir = globalenv()))
  pool_export("shared_vec")
  pids <- pool_pids()
  changed <- pool_call(function(victim) {
    if (Sys.getpid() == victim) shared_vec[1] <- -1
    shared_vec[1:2]
  }, pids[1])
  expect_identical(changed[[1]], c(-1, 2))
  expect_identical(changed[[2]], c(1, 2))
  expect_identical(pool_call(function() shared_vec[1])[[2]], 1)
  expect_identical(get("shared_vec", envir = globalenv())[1], 1)
})

test_that("exporting an unchanged vector again reuses its segment; a changed one is sent anew", {
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  x <- runif(1e5)
  segment_fd <- function() bgpool:::segment_fd(bgpool:::.bgpool$segments$x$segment)
  pool_export("x", envir = environment())
  first <- bgpool:::.bgpool$segments$x$segment
  first_fd <- segment_fd()
  pool_export("x", envir = environment())
  expect_identical(segment_fd(), first_fd)
  x[10] <- 42
  pool_export("x", envir = environment())
  expect_false(identical(segment_fd(), first_fd))
  expect_identical(unlist(pool_evalq(x[10])), c(42, 42))
})

test_that("segments are released: no memfd or mapping outlives the pool, none leaks over 100 exports", {
  withr::local_options(bgpool.share_threshold = 1000)
  gc()
  before <- memfd_count()
  local_pool(2)
  pids <- pool_pids()
  x <- runif(2e4)
  for (i in 1:100) {
    x[1] <- i  # a new segment each time
    pool_export("x", envir = environment())
  }
  expect_identical(unlist(pool_evalq(x[1])), c(100, 100))
  gc()
  # the master keeps only the latest segment; each worker maps only its
  # latest copy once the old ones are collected
  expect_lte(memfd_count(), before + 1L)
  maps <- unlist(pool_evalq({ invisible(gc()); sum(grepl("memfd:bgpool", readLines("/proc/self/maps"))) }))
  expect_true(all(maps <= 1L))
  suppressMessages(delete_pool())
  gc()
  expect_identical(memfd_count(), before)
  expect_false(any(grepl("memfd:bgpool", readLines("/proc/self/maps"))))
})

test_that("without shared memory the same values are streamed", {
  local_pool(2)
  withr::local_options(bgpool.share_threshold = Inf)
  x <- c(runif(1e5), NA)
  pool_export("x", envir = environment())
  expect_identical(pool_call(get, "x")[[1]], x)
  expect_identical(worker_memfd_maps(), c(0L, 0L))
})

test_that("a replacement worker maps the exported segments too", {
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  x <- runif(1e5)
  pool_export("x", envir = environment())
  victim <- pool_pids()[2]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  expect_identical(pool_call(get, "x"), list(x, x))
})

test_that("a superseded export's segment goes at once, without waiting for R to collect it", {
  withr::local_options(bgpool.share_threshold = 1000)
  gc()
  before <- memfd_count()
  local_pool(2)
  big <- runif(2.5e6)  # 20 MB
  for (i in 1:4) {
    big[1] <- i
    pool_export("big", envir = environment())
    # (no gc() here or on the workers)
    expect_identical(memfd_count(), before + 1L)
    expect_identical(worker_memfd_maps(), c(1L, 1L))
  }
  expect_identical(unlist(parallel::clusterEvalQ(pool_cluster(), big[1])), c(4, 4))
  # exported again as a small value, its segment goes too
  big <- 1
  pool_export("big", envir = environment())
  expect_identical(memfd_count(), before)
  expect_identical(worker_memfd_maps(), c(0L, 0L))
  big <- runif(2.5e6)
  pool_export("big", envir = environment())
  suppressMessages(delete_pool())
  expect_identical(memfd_count(), before)
})

test_that("a failed export does not leave its segments to the next export", {
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  pool_evalq({
    small2 <- 1
    lockBinding("small2", globalenv())
  })
  small2 <- 2
  big2 <- rep(3, 2e5)
  err <- tryCatch(pool_export(c("small2", "big2"), envir = environment()), error = function(e) e)
  expect_s3_class(err, "bgpool_task_error")
  expect_match(conditionMessage(err), "small2", fixed = TRUE)
  # nothing of it stays mapped on the workers
  expect_identical(worker_memfd_maps(), c(0L, 0L))
  big3 <- rep(2, 2e5)
  pool_export("big3", envir = environment())
  expect_identical(unlist(pool_evalq(sum(big3))), rep(sum(big3), 2))
  # the failed export's segment is not kept: the master holds big3's only
  expect_identical(names(as.list(bgpool:::.bgpool$segments)), "big3")
  # and a smaller stale segment could not be mapped as a larger vector
  big4 <- rep(5, 3e5)
  pool_export("big4", envir = environment())
  expect_identical(unlist(pool_evalq(sum(big4))), rep(sum(big4), 2))
})

test_that("an export that a recorded call came after is kept for replay, so a replacement ends as the others", {
  withr::local_options(bgpool.share_threshold = 1000)
  gc()
  before <- memfd_count()
  local_pool(2)
  x <- rep(1, 2e5)
  pool_export("x", envir = environment())
  pool_evalq(y <- sum(x))  # uses the first x
  x <- rep(2, 2e5)
  pool_export("x", envir = environment())
  # the first x is kept: replaying the pool_evalq() needs it
  expect_identical(memfd_count(), before + 2L)
  victim <- pool_pids()[1]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  expect_identical(pool_call(global_fun(function() c(y, sum(x)))), list(c(2e5, 4e5), c(2e5, 4e5)))
  # init_pool() starts the set-up afresh, and lets all of it go
  suppressMessages(init_pool(2))
  expect_identical(memfd_count(), before)
})
