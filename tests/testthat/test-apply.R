# pool_* results must be identical() to parallel's PSOCK equivalents.

test_that("pool_lapply matches parLapply", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  sq <- function(v) v^2

  inputs <- list(
    unnamed = 1:7,
    named = c(a = 1, b = 2, c = 3),
    list = list(1L, "a", NULL, list(z = 2), c(TRUE, NA)),
    named_list = list(p = 1:3, q = letters, r = NULL),
    character = c("x", "yy", "zzz"),
    factor = factor(c("lo", "hi", "lo", "mid"), levels = c("lo", "mid", "hi")),
    data_frame = data.frame(a = 1:3, b = c("x", "y", "z"), c = c(0.5, NA, 2))
  )
  for (nm in names(inputs)) {
    X <- inputs[[nm]]
    expect_identical(pool_lapply(X, identity), parallel::parLapply(cl, X, identity),
                     label = paste("pool_lapply identity on", nm))
    expect_identical(pool_lapply(X, length), parallel::parLapply(cl, X, length),
                     label = paste("pool_lapply length on", nm))
  }
  expect_identical(pool_lapply(1:5, sq), parallel::parLapply(cl, 1:5, sq))
  expect_identical(pool_lapply(1:5, sq), lapply(1:5, sq))
  expect_identical(pool_lapply(c(a = 1, b = 2), sq), list(a = 1, b = 4))

  # factor elements are length-one factors, data.frame elements are columns
  fac <- pool_lapply(factor(c("u", "v")), identity)
  expect_identical(fac, list(factor("u", levels = c("u", "v")),
                             factor("v", levels = c("u", "v"))))
  df <- pool_lapply(data.frame(a = 1:2, b = c("x", "y")), identity)
  expect_identical(df, list(a = 1:2, b = c("x", "y")))
})

test_that("pool_lapply passes extra arguments and accepts chunk.size", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  f <- function(x, y, z = 0) x * y + z

  expect_identical(pool_lapply(1:6, f, 10, z = 1), parallel::parLapply(cl, 1:6, f, 10, z = 1))
  expect_identical(pool_lapply(1:6, f, y = 2), as.list(seq(2, 12, by = 2)))
  for (cs in c(1L, 2L, 4L, 100L)) {
    expect_identical(pool_lapply(1:10, f, y = 3, chunk.size = cs),
                     parallel::parLapply(cl, 1:10, f, y = 3, chunk.size = cs))
    expect_identical(pool_lapply(1:10, f, y = 3, chunk.size = cs),
                     lapply(1:10, f, y = 3))
  }
})

test_that("pool_lapply accepts a function name", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  expect_identical(pool_lapply(c(4, 9, 16), "sqrt"), list(2, 3, 4))
  expect_identical(pool_lapply(c(4, 9, 16), "sqrt"), parallel::parLapply(cl, c(4, 9, 16), "sqrt"))
  expect_identical(pool_sapply(c(4, 9, 16), "sqrt"), c(2, 3, 4))
  expect_identical(pool_map("rep", 1:3, 3:1), list(c(1L, 1L, 1L), c(2L, 2L), 3L))
  expect_identical(pool_map("rep", 1:3, 3:1), parallel::clusterMap(cl, "rep", 1:3, 3:1))
  expect_identical(pool_call("sqrt", 49), rep(list(7), n))
})

test_that("pool_sapply matches parSapply", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  sq <- function(v) v^2
  pair <- function(v) c(min = v, max = v * 10)
  mat <- function(v) matrix(v, 2, 2)
  ragged <- function(v) seq_len(v)

  expect_identical(pool_sapply(1:5, sq), parallel::parSapply(cl, 1:5, sq))
  expect_identical(pool_sapply(1:5, sq), c(1, 4, 9, 16, 25))
  expect_identical(pool_sapply(c(a = 1, b = 2), sq), parallel::parSapply(cl, c(a = 1, b = 2), sq))
  expect_identical(pool_sapply(c(a = 1, b = 2), sq), c(a = 1, b = 4))

  chr <- c("apple", "kiwi", "fig")
  expect_identical(pool_sapply(chr, nchar), parallel::parSapply(cl, chr, nchar))
  expect_identical(pool_sapply(chr, nchar), c(apple = 5L, kiwi = 4L, fig = 3L))
  expect_identical(pool_sapply(chr, nchar, USE.NAMES = FALSE),
                   parallel::parSapply(cl, chr, nchar, USE.NAMES = FALSE))
  expect_identical(pool_sapply(chr, nchar, USE.NAMES = FALSE), c(5L, 4L, 3L))

  # matrix results
  expect_identical(pool_sapply(1:3, pair), parallel::parSapply(cl, 1:3, pair))
  expect_identical(dim(pool_sapply(1:3, pair)), c(2L, 3L))
  expect_identical(pool_sapply(c(x = 1, y = 2), pair), parallel::parSapply(cl, c(x = 1, y = 2), pair))

  # simplify = FALSE / "array"
  expect_identical(pool_sapply(1:3, sq, simplify = FALSE),
                   parallel::parSapply(cl, 1:3, sq, simplify = FALSE))
  expect_identical(pool_sapply(1:3, sq, simplify = FALSE), list(1, 4, 9))
  expect_identical(pool_sapply(chr, toupper, simplify = FALSE),
                   parallel::parSapply(cl, chr, toupper, simplify = FALSE))
  expect_identical(pool_sapply(1:3, mat, simplify = "array"),
                   parallel::parSapply(cl, 1:3, mat, simplify = "array"))
  expect_identical(dim(pool_sapply(1:3, mat, simplify = "array")), c(2L, 2L, 3L))
  expect_identical(pool_sapply(1:3, mat, simplify = TRUE),
                   parallel::parSapply(cl, 1:3, mat, simplify = TRUE))

  # results that cannot be simplified stay a list
  expect_identical(pool_sapply(1:3, ragged), parallel::parSapply(cl, 1:3, ragged))
  expect_identical(pool_sapply(1:3, ragged), list(1L, 1:2, 1:3))

  # extra args and chunk.size
  expect_identical(pool_sapply(1:8, function(x, k) x + k, k = 0.5, chunk.size = 3),
                   parallel::parSapply(cl, 1:8, function(x, k) x + k, k = 0.5, chunk.size = 3))
  expect_identical(pool_sapply(list(a = 1:3, b = 4:6), sum),
                   parallel::parSapply(cl, list(a = 1:3, b = 4:6), sum))
})

test_that("pool_map matches clusterMap", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  add <- function(x, y) x + y
  add3 <- function(x, y, z) x + y + z
  pair <- function(x, y) c(x, y)

  expect_identical(pool_map(add, 1:5, 2), parallel::clusterMap(cl, add, 1:5, 2))
  expect_identical(pool_map(add, 1:5, 2), list(3, 4, 5, 6, 7))

  # recycling
  expect_identical(pool_map(add, 1:3, 1:6), parallel::clusterMap(cl, add, 1:3, 1:6))
  expect_identical(pool_map(add, 1:3, 1:6), as.list(c(2L, 4L, 6L, 5L, 7L, 9L)))
  expect_identical(pool_map(add, 1:3, 1:6, RECYCLE = TRUE),
                   parallel::clusterMap(cl, add, 1:3, 1:6, RECYCLE = TRUE))
  expect_identical(pool_map(add, 1:3, 1:6, RECYCLE = FALSE),
                   parallel::clusterMap(cl, add, 1:3, 1:6, RECYCLE = FALSE))
  expect_identical(pool_map(add, 1:3, 1:6, RECYCLE = FALSE), list(2L, 4L, 6L))

  # MoreArgs
  expect_identical(pool_map(add3, 1:4, 4:1, MoreArgs = list(z = 100)),
                   parallel::clusterMap(cl, add3, 1:4, 4:1, MoreArgs = list(z = 100)))
  expect_identical(pool_map(add3, 1:2, MoreArgs = list(y = 1L, z = 10L)),
                   list(12L, 13L))

  # names
  expect_identical(pool_map(add, c(a = 1, b = 2, c = 3), 1),
                   parallel::clusterMap(cl, add, c(a = 1, b = 2, c = 3), 1))
  expect_identical(pool_map(add, c(a = 1, b = 2, c = 3), 1),
                   list(a = 2, b = 3, c = 4))
  expect_identical(pool_map(add, x = c(a = 1, b = 2), y = c(p = 1, q = 2)),
                   parallel::clusterMap(cl, add, x = c(a = 1, b = 2), y = c(p = 1, q = 2)))
  chr <- c("ab", "cde")
  expect_identical(pool_map(paste, chr, c("1", "2")),
                   parallel::clusterMap(cl, paste, chr, c("1", "2")))
  expect_identical(names(pool_map(paste, chr, c("1", "2"))), chr)
  expect_identical(pool_map(paste, chr, c("1", "2"), USE.NAMES = FALSE),
                   parallel::clusterMap(cl, paste, chr, c("1", "2"), USE.NAMES = FALSE))
  expect_null(names(pool_map(paste, chr, c("1", "2"), USE.NAMES = FALSE)))
  lst <- list(first = 1:2, second = 3:4)
  expect_identical(pool_map(sum, lst, 10L), parallel::clusterMap(cl, sum, lst, 10L))

  # SIMPLIFY
  expect_identical(pool_map(add, 1:4, 4:1, SIMPLIFY = TRUE),
                   parallel::clusterMap(cl, add, 1:4, 4:1, SIMPLIFY = TRUE))
  expect_identical(pool_map(add, 1:4, 4:1, SIMPLIFY = TRUE), rep(5L, 4))
  expect_identical(pool_map(pair, 1:3, 4:6, SIMPLIFY = TRUE),
                   parallel::clusterMap(cl, pair, 1:3, 4:6, SIMPLIFY = TRUE))
  expect_identical(pool_map(pair, c(a = 1, b = 2), 3, SIMPLIFY = TRUE),
                   parallel::clusterMap(cl, pair, c(a = 1, b = 2), 3, SIMPLIFY = TRUE))
  expect_identical(pool_map(pair, 1:3, 4:6, SIMPLIFY = FALSE),
                   list(c(1L, 4L), c(2L, 5L), c(3L, 6L)))
})

test_that("large inputs keep their order", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  X <- 1000:1
  f <- function(x) x * 2L
  res <- pool_lapply(X, f)
  expect_length(res, 1000L)
  expect_identical(res, parallel::parLapply(cl, X, f))
  expect_identical(unlist(res), X * 2L)
  expect_identical(pool_sapply(X, f), X * 2L)
  expect_identical(pool_sapply(X, f), parallel::parSapply(cl, X, f))
  expect_identical(pool_lapply(X, f, chunk.size = 7), as.list(X * 2L))
  expect_identical(pool_map(function(a, b) a - b, X, 1:1000, SIMPLIFY = TRUE),
                   X - 1:1000)
  nm <- setNames(as.numeric(1:1000), paste0("e", 1:1000))
  expect_identical(pool_sapply(nm, sqrt), parallel::parSapply(cl, nm, sqrt))
  expect_identical(names(pool_map(sqrt, nm)), names(nm))
})

test_that("results are in input order even when early elements finish last", {
  n <- test_pool_size()
  local_pool(n)
  slow_early <- function(i) {
    Sys.sleep((7 - i) * 0.05)
    i
  }
  expect_identical(pool_lapply(1:6, slow_early), as.list(1:6))
  expect_identical(pool_sapply(c(a = 1, b = 2, c = 3), slow_early), c(a = 1, b = 2, c = 3))
  expect_identical(pool_map(function(i, j) slow_early(i) + j, 1:6, 10L, SIMPLIFY = TRUE),
                   11:16)
  pids <- pool_call(Sys.getpid)
  slow_first <- function(first) {
    if (Sys.getpid() == first) Sys.sleep(0.5)
    Sys.getpid()
  }
  expect_identical(pool_call(slow_first, pids[[1]]), pids)
})

test_that("pool_call matches clusterCall", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  f <- function(a, b = 2) list(sum = a + b, prod = a * b)

  res <- pool_call(f, 3, b = 4)
  expect_type(res, "list")
  expect_length(res, pool_size())
  expect_null(names(res))
  expect_identical(res, parallel::clusterCall(cl, f, 3, b = 4))
  expect_identical(res, rep(list(list(sum = 7, prod = 12)), n))
  expect_identical(pool_call(function() 1L), rep(list(1L), n))
  pids <- unlist(pool_call(Sys.getpid))
  expect_length(unique(pids), n)
})

test_that("pool_evalq matches clusterEvalQ", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)

  expect_identical(pool_evalq(1 + 1), parallel::clusterEvalQ(cl, 1 + 1))
  expect_identical(pool_evalq(1 + 1), rep(list(2), n))
  res <- pool_evalq({
    a_bgpool <- 1:3
    b_bgpool <- rev(a_bgpool)
    paste(a_bgpool, b_bgpool, sep = "-")
  })
  expect_identical(res, rep(list(c("1-3", "2-2", "3-1")), n))
  # assignments in a pool_evalq persist in the workers' global environments
  expect_identical(pool_evalq(b_bgpool), rep(list(3:1), n))
  expect_identical(pool_evalq(exists("b_bgpool")), rep(list(TRUE), n))
  expect_false(exists("b_bgpool", envir = globalenv()))
  expect_identical(pool_evalq(invisible(5L)), rep(list(5L), n))

  pids <- unlist(pool_evalq(Sys.getpid()))
  expect_length(pids, n)
  expect_length(unique(pids), n)
  expect_false(Sys.getpid() %in% pids)
})

test_that("zero-length inputs", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  expect_identical(pool_lapply(list(), identity), parallel::parLapply(cl, list(), identity))
  expect_identical(pool_lapply(list(), identity), list())
  expect_identical(pool_lapply(integer(0), identity), parallel::parLapply(cl, integer(0), identity))
  expect_identical(pool_sapply(integer(0), identity), parallel::parSapply(cl, integer(0), identity))
  expect_identical(pool_sapply(character(0), identity), parallel::parSapply(cl, character(0), identity))
  expect_identical(pool_map(identity, integer(0)), list())
  # the pool still works afterwards
  expect_identical(pool_sapply(1:3, identity), 1:3)
})
