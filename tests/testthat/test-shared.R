# Large exports travel through shared memory segments mapped copy-on-write.

fd_targets <- function(pid = Sys.getpid()) {
  fds <- list.files(file.path("/proc", pid, "fd"), full.names = TRUE)
  vapply(fds, function(f) tryCatch(Sys.readlink(f), error = function(e) ""), "")
}
memfd_count <- function(pid = Sys.getpid()) sum(grepl(segment_pattern, fd_targets(pid)))
# Evaluated on the workers: how many mappings of segments they hold.
# (Through the cluster: a pool_evalq() would be recorded as set-up, which
# keeps the exports before it for replay.)
worker_memfd_maps <- function() {
  unlist(parallel::clusterCall(pool_cluster(), function(pattern)
    sum(grepl(pattern, readLines("/proc/self/maps"))), segment_pattern))
}

# Values of every shareable type, with attributes, large enough to travel
# as shared memory (threshold 1000 bytes).
shareable_values <- function(n = 5000) {
  list(
    dbl = c(runif(n - 4), NA, NaN, -0, Inf),
    int = c(sample.int(1000, n - 1, replace = TRUE), NA),
    lgl = c(rep(c(TRUE, FALSE), length.out = n - 1), NA),
    raw = as.raw(sample(0:255, n, replace = TRUE)),
    cpl = complex(real = runif(n), imaginary = runif(n)),
    mat = matrix(runif(n), 50, dimnames = list(NULL, paste0("c", 1:100))),
    named = stats::setNames(seq_len(n) + 0.5, paste0("n", seq_len(n))),
    fac = factor(sample(letters, n, replace = TRUE)),
    dates = as.Date("2020-01-01") + 0:(n - 1),
    frame = data.frame(x = seq_len(n) + 0.25, y = sample.int(9, n, replace = TRUE))
  )
}

test_that("every shareable vector type round-trips identically through shared memory", {
  skip_on_psock("its workers share no memory: values travel serialized")
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  values <- shareable_values()
  values$frame <- NULL  # the vectors themselves: 9 exports, 9 segments
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
  skip_on_psock("its workers share no memory: values travel serialized")
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  x <- runif(1e5)
  segment_fd <- function() bgpool:::shared_id(bgpool:::.bgpool$segments$x$shared)
  pool_export("x", envir = environment())
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
  maps <- unlist(pool_call(function(pattern) {
    invisible(gc())
    sum(grepl(pattern, readLines("/proc/self/maps")))
  }, segment_pattern))
  expect_true(all(maps <= 1L))
  suppressMessages(delete_pool())
  gc()
  expect_identical(memfd_count(), before)
  expect_false(any(grepl(segment_pattern, readLines("/proc/self/maps"))))
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
  skip_on_psock("its workers share no memory: values travel serialized")
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
  # (the psock backend makes none)
  expect_identical(names(as.list(bgpool:::.bgpool$segments)), if (!on_psock()) "big3")
  # and a smaller stale segment could not be mapped as a larger vector
  big4 <- rep(5, 3e5)
  pool_export("big4", envir = environment())
  expect_identical(unlist(pool_evalq(sum(big4))), rep(sum(big4), 2))
})

test_that("an export that a recorded call came after is kept for replay, so a replacement ends as the others", {
  skip_on_psock("its workers share no memory: values travel serialized")
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

test_that("results of every vector type, with attributes, come back through shared memory, identical", {
  skip_on_psock("its workers share no memory: values travel serialized")
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  values <- shareable_values()
  pool_export("values", envir = environment())
  got <- pool_lapply(names(values), function(name) values[[name]])
  names(got) <- names(values)
  for (name in names(values)) expect_identical(got[[name]], values[[name]], info = name)
  # they are mapped, not copied: the atomic ones, and a data frame's columns
  expect_true(bgpool:::is_shared_vector(got$dbl))
  expect_true(bgpool:::is_shared_vector(got$frame$x))
  expect_false(bgpool:::is_shared_vector(unclass(got$fac)[1:2]))  # a subset is ordinary
  # and through pool_map(), pool_call() and the cluster
  expect_identical(pool_map(function(v) v, values["dbl"])[[1]], values$dbl)
  expect_identical(pool_call(function(v) v, values$cpl), list(values$cpl, values$cpl))
  expect_identical(parallel::clusterCall(pool_cluster(), function(v) v, values$mat)[[2]], values$mat)
})

test_that("large arguments go to the workers through shared memory, identical, each element mapped once", {
  skip_on_psock("its workers share no memory: values travel serialized")
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  values <- shareable_values()
  seen <- pool_lapply(values, function(v) list(v, bgpool:::is_shared_vector(if (is.data.frame(v)) v$x else v)))
  for (name in names(values)) {
    expect_identical(seen[[name]][[1]], values[[name]], info = name)
    expect_true(seen[[name]][[2]], info = name)
  }
  # a large extra argument is shared too, one copy for all the workers
  table <- runif(2e5)
  sums <- pool_sapply(1:4, function(i, table) sum(table) + i, table = table)
  expect_equal(sums, sum(table) + 1:4)
})

test_that("results outlive the worker that made them", {
  skip_on_psock("its workers share no memory: values travel serialized")
  local_pool(2)
  withr::local_options(bgpool.share_threshold = 1000)
  pids <- pool_pids()
  got <- pool_lapply(1:2, function(i) rep(as.double(i), 1e5))
  expect_true(bgpool:::is_shared_vector(got[[1]]))
  tools::pskill(pids, tools::SIGKILL)
  expect_true(wait_pids_gone(pids))
  gc()
  expect_identical(got[[1]], rep(1, 1e5))
  expect_identical(sum(got[[2]]), 2e5)
  # the pool goes on with new workers
  expect_identical(pool_sapply(1:2, function(i) i), 1:2)
})

test_that("no segment, mapping or descriptor leaks over 100 calls with shared results and arguments", {
  withr::local_options(bgpool.share_threshold = 1000)
  local_pool(2)
  invisible(pool_lapply(1:2, function(i) rep(1, 1e4)))
  gc()
  fds <- open_fd_count()
  maps <- function(pid) sum(grepl(segment_pattern, readLines(file.path("/proc", pid, "maps"))))
  for (k in 1:100) {
    arg <- runif(1e4)
    res <- pool_lapply(1:4, function(i, arg) arg * i, arg = arg)
    expect_identical(res[[3]], arg * 3)
  }
  rm(res)
  gc()
  expect_identical(open_fd_count(), fds)
  expect_identical(maps(Sys.getpid()), 0L)
  expect_identical(memfd_count(), 0L)
  # the workers hold nothing either, once they collect what they dropped
  # (a call's job, with its extra arguments, stays until the next call's)
  invisible(pool_lapply(1:4, function(i) i))
  held <- unlist(parallel::clusterCall(pool_cluster(), function(pattern) {
    invisible(gc())
    c(sum(grepl(pattern, readLines("/proc/self/maps"))),
      sum(grepl(pattern, vapply(list.files("/proc/self/fd", full.names = TRUE),
                                function(f) suppressWarnings(Sys.readlink(f)), ""))))
  }, segment_pattern))
  expect_identical(held, rep(0L, 4))
})
