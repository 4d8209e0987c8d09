# Reproducible random numbers: .seed (a stream per element) and
# init_pool(seed =) (a stream per worker), against what the parallel
# package's L'Ecuyer-CMRG streams give in the master.

# Stream `i` of `seed`: stream 1 is the .Random.seed of
# set.seed(seed, kind = "L'Ecuyer-CMRG"), stream i + 1 is
# parallel::nextRNGStream() of stream i.
streams <- function(seed, n) {
  local_rng_unchanged()
  set.seed(seed, kind = "L'Ecuyer-CMRG")
  out <- list(.Random.seed)
  for (i in seq_len(n - 1L)) out[[i + 1L]] <- parallel::nextRNGStream(out[[i]])
  out
}

# What a sequential loop gives that runs task(i) with stream i of `seed`.
with_streams <- function(seed, n, task) {
  local_rng_unchanged()
  all <- streams(seed, n)
  lapply(seq_len(n), function(i) {
    assign(".Random.seed", all[[i]], envir = globalenv())
    task(i)
  })
}

draws <- global_fun(function(i) c(i, runif(2), rnorm(1), sample.int(1000, 1)))

test_that("the native stream jump is parallel::nextRNGStream(), any number of times", {
  s <- streams(2718, 101)
  for (k in c(0, 1, 2, 7, 100))
    expect_identical(bgpool:::rng_jump(s[[1L]], k), s[[k + 1L]])
  # jumps compose, far beyond what iterating could check
  far <- 2^40 + 3
  expect_identical(bgpool:::rng_jump(bgpool:::rng_jump(s[[1L]], far), 12345),
                   bgpool:::rng_jump(bgpool:::rng_jump(s[[1L]], 12345), far))
  expect_identical(bgpool:::rng_jump(s[[2L]], far), bgpool:::rng_jump(s[[1L]], far + 1))
})

test_that(".seed gives element i stream i, whatever the pool size, chunking and function", {
  n <- 23L
  ref <- with_streams(123, n, draws)
  map_task <- global_fun(function(i, j) c(i, j, runif(1)))
  map_ref <- with_streams(123, n, function(i) c(i, 2L * i, runif(1)))
  for (size in unique(c(1L, test_pool_size()))) {
    local_pool(size)
    for (cs in list(NULL, 1, 4, 100)) {
      expect_identical(pool_lapply(1:n, draws, .seed = 123, chunk.size = cs), ref,
                       label = sprintf("pool_lapply, %d workers, chunk.size %s", size, format(cs)))
    }
    expect_identical(pool_sapply(1:n, draws, .seed = 123), simplify2array(ref))
    expect_identical(pool_map(map_task, 1:n, 2L * (1:n), .seed = 123), map_ref)
    # a time limit sends elements one at a time
    expect_identical(pool_lapply(1:n, draws, .seed = 123, .timeout = 60), ref)
    # the option is the default
    withr::with_options(list(bgpool.seed = 123), expect_identical(pool_lapply(1:n, draws), ref))
  }
  # another seed, other numbers
  expect_false(identical(pool_lapply(1:n, draws, .seed = 124), ref))
})

test_that(".seed follows the session's normal and sample kinds, as set.seed() does", {
  local_rng_unchanged()
  local_pool()
  # (not Box-Muller: it keeps state outside .Random.seed)
  suppressWarnings(RNGkind("Mersenne-Twister", "Kinderman-Ramage", "Rounding"))
  ref <- with_streams(5, 9, draws)
  expect_identical(pool_lapply(1:9, draws, .seed = 5), ref)
  RNGkind("default", "default", "default")
  expect_false(identical(pool_lapply(1:9, draws, .seed = 5), ref))
})

test_that("seeding leaves the session's random numbers and their kind as they were", {
  local_rng_unchanged()
  local_pool()
  kinds <- list(c("Mersenne-Twister", "Inversion", "Rejection"),
                c("Knuth-TAOCP-2002", "Box-Muller", "Rounding"),
                c("L'Ecuyer-CMRG", "Inversion", "Rejection"))
  for (kind in kinds) {
    suppressWarnings(RNGkind(kind[1L], kind[2L], kind[3L]))
    set.seed(99)
    before <- .Random.seed
    pool_lapply(1:5, draws, .seed = 1)
    expect_identical(.Random.seed, before, label = paste(kind, collapse = "/"))
    expect_identical(RNGkind(), kind)
    # and without a .Random.seed (no random numbers drawn yet)
    rm(".Random.seed", envir = globalenv())
    pool_lapply(1:5, draws, .seed = 1)
    suppressMessages(init_pool(pool_size(), seed = 1))
    expect_false(exists(".Random.seed", envir = globalenv(), inherits = FALSE))
    expect_identical(RNGkind(), kind)
  }
})

test_that(".seed = TRUE takes its seed from the session's random numbers", {
  local_rng_unchanged()
  local_pool()
  set.seed(7)
  got <- pool_lapply(1:6, draws, .seed = TRUE)
  after <- .Random.seed
  set.seed(7)
  seed <- sample.int(.Machine$integer.max, 1L)
  expect_identical(.Random.seed, after)
  expect_identical(got, with_streams(seed, 6L, draws))
  set.seed(7)
  expect_identical(pool_lapply(1:6, draws, .seed = TRUE), got)
})

test_that("each worker's own random numbers come back after a seeded call", {
  local_rng_unchanged()
  local_pool()
  # without a .Random.seed, none is left behind, nor another kind
  pool_lapply(1:10, draws, .seed = 3, chunk.size = 1)
  expect_identical(pool_evalq(exists(".Random.seed", envir = globalenv(), inherits = FALSE)),
                   rep(list(FALSE), pool_size()))
  expect_identical(pool_evalq(RNGkind()),
                   rep(list(c("Mersenne-Twister", "Inversion", "Rejection")), pool_size()))
  # with one, the worker goes on from it, also after a task's error
  pool_evalq(set.seed(11))
  before <- pool_evalq(.Random.seed)
  pool_lapply(1:10, draws, .seed = 3, chunk.size = 2)
  fails_at_4 <- global_fun(function(i) if (i == 4) stop("four") else runif(1))
  expect_error(pool_lapply(1:10, fails_at_4, .seed = 3), class = "bgpool_task_error")
  expect_identical(pool_evalq(.Random.seed), before)
  # the workers' kind, whatever earlier code left the session's as
  set.seed(11, kind = "Mersenne-Twister", normal.kind = "Inversion", sample.kind = "Rejection")
  expect_identical(pool_evalq(runif(1)), rep(list(runif(1)), pool_size()))
})

test_that("failed and re-run elements keep their own streams", {
  local_pool()
  ref <- with_streams(9, 12, draws)
  # the rest of a chunk whose task failed runs elsewhere
  fails_at_3 <- global_fun(function(i) {
    if (i == 3) stop("three")
    c(i, runif(2), rnorm(1), sample.int(1000, 1))
  })
  e <- tryCatch(pool_lapply(1:12, fails_at_3, .seed = 9, chunk.size = 5), error = function(e) e)
  expect_s3_class(e, "bgpool_task_error")
  expect_identical(e$results[-3], ref[-3])
  # elements lost with a worker run again, on a fresh one, with their streams
  flag <- tempfile()
  withr::defer(unlink(flag))
  kill_once <- global_fun(function(i, flag) {
    if (i == 4L && !file.exists(flag)) {
      file.create(flag)
      tools::pskill(Sys.getpid(), tools::SIGKILL)
      Sys.sleep(10)
    }
    Sys.sleep(0.01)
    c(i, runif(2), rnorm(1), sample.int(1000, 1))
  })
  got <- pool_lapply(1:12, kill_once, flag = flag, .seed = 9, .retry = 1, chunk.size = 2)
  expect_true(file.exists(flag))
  expect_identical(got, ref)
})

test_that("init_pool(seed =) gives worker j stream j, as clusterSetRNGStream() does", {
  local_rng_unchanged()
  n <- test_pool_size()
  withr::defer(suppressMessages(delete_pool()))
  set.seed(1)
  before <- .Random.seed
  suppressMessages(init_pool(n, restart = TRUE, seed = 2024))
  got <- pool_evalq(runif(3))
  expect_identical(.Random.seed, before)
  expect_identical(got, with_streams(2024, n, function(j) runif(3)))
  cl <- local_psock(n)
  parallel::clusterSetRNGStream(cl, 2024)
  expect_identical(got, parallel::clusterEvalQ(cl, runif(3)))
  # a reset (same workers) seeds them again
  pids <- pool_pids()
  suppressMessages(init_pool(n, seed = 2024))
  expect_identical(pool_pids(), pids)
  expect_identical(pool_evalq(runif(3)), got)
  # without a seed, a reset leaves the workers' random numbers to them
  suppressMessages(init_pool(n))
  expect_identical(pool_evalq(exists(".Random.seed", envir = globalenv(), inherits = FALSE)),
                   rep(list(FALSE), n))
})

test_that("a .seed or seed that is not NULL, TRUE or one number is refused", {
  local_pool()
  bad <- list("1", c(1, 2), NA, NA_real_, FALSE, Inf, 1e10, list(1), numeric())
  for (seed in bad) {
    expect_error(pool_lapply(1:2, identity, .seed = seed), class = "bgpool_bad_argument",
                 label = deparse(seed))
    expect_error(pool_map(identity, 1:2, .seed = seed), "`.seed` must be NULL")
  }
  suppressMessages(delete_pool())
  expect_error(init_pool(1, seed = "x"), class = "bgpool_bad_argument")
  expect_error(init_pool(1, seed = "x"), "`seed` must be NULL")
  expect_false(pool_exists())
})
