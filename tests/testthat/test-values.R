# Values must survive the trip master -> worker -> master unchanged.

# Send `value` to a worker as a task element and return it.
rt_lapply <- function(value) {
  pool_lapply(list(value), identity)[[1]]
}

# Export `value` to all workers and read it back from each of them.
rt_export <- function(value) {
  .bgpool_rt_value <- value
  pool_export(".bgpool_rt_value", envir = environment())
  pool_evalq(get(".bgpool_rt_value", envir = globalenv()))
}

# identical() comparing doubles bitwise (so 0 and -0 differ).
expect_bitwise_identical <- function(object, expected) {
  expect_true(identical(object, expected, num.eq = FALSE))
}

# Round trip `value` through a task and through pool_export; when `cl` (a
# PSOCK cluster) is given, also compare with what PSOCK gives back.
expect_roundtrip <- function(value, cl = NULL) {
  back <- rt_lapply(value)
  expect_identical(back, value)
  expect_bitwise_identical(back, value)
  exported <- rt_export(value)
  expect_length(exported, pool_size())
  for (v in exported) expect_bitwise_identical(v, value)
  if (!is.null(cl)) {
    ref <- parallel::parLapply(cl, list(value), identity)[[1]]
    expect_bitwise_identical(back, ref)
  }
  invisible(back)
}

test_that("atomic vectors round-trip", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)

  expect_roundtrip(c(TRUE, FALSE, NA), cl)
  expect_roundtrip(c(1L, NA, .Machine$integer.max, -.Machine$integer.max), cl)
  dbl <- c(1.5, NA, NaN, Inf, -Inf, -0, 0, pi, .Machine$double.xmax,
           .Machine$double.xmin, 5e-324)
  back <- expect_roundtrip(dbl, cl)
  expect_true(is.na(back[2]) && !is.nan(back[2]))
  expect_true(is.nan(back[3]))
  expect_identical(1 / back[6], -Inf)
  expect_identical(1 / back[7], Inf)
  expect_identical(1 / rt_lapply(-0), -Inf)
  expect_identical(1 / rt_export(-0)[[1]], -Inf)
  expect_identical(back[11], 5e-324)

  expect_roundtrip(complex(real = c(1, NA, Inf, -0), imaginary = c(-1, 0, NaN, 2)), cl)
  expect_roundtrip(NA_complex_, cl)
  expect_roundtrip(as.raw(0:255), cl)
  expect_roundtrip(logical(0), cl)
  expect_roundtrip(character(0), cl)
  expect_roundtrip(NULL, cl)
  expect_null(rt_lapply(NULL))
  expect_identical(pool_lapply(list(NULL, 1), identity), list(NULL, 1))
})

test_that("character vectors keep contents and encodings", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)

  chr <- c("a", NA, "", "na\u00efve", "\u65e5\u672c\u8a9e", "\U0001F600",
           "tab\there", "quote\"back\\slash", "nul-free \u00a0 nbsp")
  back <- expect_roundtrip(chr, cl)
  expect_identical(Encoding(back), Encoding(chr))
  expect_identical(nchar(back[4:6]), c(5L, 3L, 1L))
  expect_identical(back[5], "\u65e5\u672c\u8a9e")
  expect_true(is.na(back[2]))

  latin <- "fa\xE7ile"
  Encoding(latin) <- "latin1"
  back <- expect_roundtrip(latin, cl)
  expect_identical(Encoding(back), "latin1")
  expect_identical(enc2utf8(back), "fa\u00e7ile")

  # computing on strings in the worker
  expect_identical(pool_sapply(chr[4:6], nchar, USE.NAMES = FALSE), c(5L, 3L, 1L))
  expect_identical(pool_sapply(chr[4:6], toupper), parallel::parSapply(cl, chr[4:6], toupper))

  long <- strrep("abcdefghij", 1e6)
  expect_identical(rt_lapply(long), long)
  long_utf8 <- strrep("\u00e9\u65e5", 2e5)
  expect_identical(rt_lapply(long_utf8), long_utf8)
  expect_identical(pool_call(function(s) nchar(s), long)[[1]], 1e7L)
  many <- sprintf("string number %d", 1:1e5)
  expect_identical(rt_lapply(many), many)
})

test_that("attributes and nested lists round-trip", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)

  expect_roundtrip(c(a = 1, b = 2, c = NA), cl)
  m <- matrix(1:6, 2, 3, dimnames = list(c("r1", "r2"), c("A", "B", "C")))
  expect_roundtrip(m, cl)
  expect_roundtrip(array(1:24, dim = 2:4), cl)
  x <- structure(1:3, foo = "bar", baz = list(1, "two"), class = "myclass")
  back <- expect_roundtrip(x, cl)
  expect_identical(attr(back, "foo"), "bar")
  expect_s3_class(back, "myclass")

  nested <- list(a = 1, b = list(c = "x", d = list(e = 1:3, f = NULL)),
                 g = list(), h = list(NULL))
  back <- expect_roundtrip(nested, cl)
  expect_identical(back$b$d$e, 1:3)
  expect_true("f" %in% names(back$b$d))
  expect_roundtrip(list(), cl)
})

test_that("data frames, factors, dates and times round-trip", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)

  df <- data.frame(i = 1:3, d = c(1.5, NA, -2), s = c("a", "b", NA),
                   f = factor(c("x", "y", "x")), stringsAsFactors = FALSE)
  expect_roundtrip(df, cl)
  df2 <- df
  rownames(df2) <- c("one", "two", "three")
  expect_roundtrip(df2, cl)
  expect_roundtrip(df[0, ], cl)
  expect_roundtrip(factor(c("lo", "hi", NA), levels = c("lo", "hi", "unused")), cl)
  expect_roundtrip(factor(c("b", "a"), ordered = TRUE), cl)
  expect_roundtrip(as.Date(c("2024-02-29", NA, "1970-01-01")), cl)
  tm <- as.POSIXct(c("2024-03-10 12:34:56.789", "1999-12-31 23:59:59"),
                   tz = "America/New_York")
  back <- expect_roundtrip(tm, cl)
  expect_identical(attr(back, "tzone"), "America/New_York")
  expect_roundtrip(as.POSIXlt(tm), cl)
  expect_roundtrip(difftime(tm[1], tm[2], units = "days"), cl)

  # computed in the worker
  expect_identical(pool_sapply(list(df), nrow), 3L)
  expect_identical(pool_call(function(d) format(d + 1), as.Date("2024-02-28"))[[1]],
                   "2024-02-29")
})

test_that("functions and closures work across the pool", {
  local_pool(test_pool_size())
  make_adder <- function(k) function(z) z + k
  add5 <- make_adder(5)

  back <- rt_lapply(add5)
  expect_type(back, "closure")
  expect_identical(back(1), 6)
  expect_identical(back(1:3), c(6, 7, 8))
  expect_identical(body(back), body(add5))
  expect_identical(formals(back), formals(add5))
  expect_identical(get("k", environment(back)), 5)

  # a closure used as the task function sees its enclosure on the worker
  expect_identical(pool_sapply(1:3, add5), c(6, 7, 8))
  expect_identical(pool_lapply(1:2, function(i, g) g(i), g = add5), list(6, 7))
  expect_identical(pool_map(function(f, v) f(v), list(add5, make_adder(100)), 1),
                   list(6, 101))

  # a closure created on the worker is returned and still works
  made <- pool_call(function(m) { k <- m * 2; function(z) z * k }, 5)
  expect_length(made, pool_size())
  expect_identical(made[[1]](3), 30)
  expect_identical(pool_evalq(function(q) q + 1)[[1]](1), 2)
})

test_that("environments are copied, not shared", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  e <- new.env(parent = emptyenv())
  assign("a", 1, envir = e)
  assign("b", letters[1:3], envir = e)
  assign(".hidden", TRUE, envir = e)

  back <- rt_lapply(e)
  expect_true(is.environment(back))
  expect_identical(sort(ls(back, all.names = TRUE)), c(".hidden", "a", "b"))
  expect_identical(mget(c(".hidden", "a", "b"), envir = back),
                   mget(c(".hidden", "a", "b"), envir = e))
  expect_identical(parent.env(back), emptyenv())

  modified <- pool_lapply(list(e), function(en) { en$a <- 99; en })[[1]]
  expect_identical(modified$a, 99)
  expect_identical(e$a, 1)
  ref <- parallel::parLapply(cl, list(e), function(en) { en$a <- 99; en })[[1]]
  expect_identical(as.list(modified, all.names = TRUE, sorted = TRUE),
                   as.list(ref, all.names = TRUE, sorted = TRUE))
  expect_identical(pool_sapply(list(e), function(en) en$b[2]), "b")
})

test_that("S4 objects round-trip", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  methods::setClass("BgPoolPoint", representation(x = "numeric", y = "numeric"),
                    where = globalenv())
  withr::defer(methods::removeClass("BgPoolPoint", where = globalenv()))
  obj <- methods::new("BgPoolPoint", x = 1, y = 2)

  back <- expect_roundtrip(obj, cl)
  expect_true(isS4(back))
  expect_true(methods::is(back, "BgPoolPoint"))
  expect_identical(back@y, 2)

  # slot access works on workers without the class definition (as with PSOCK)
  slot_sum <- global_fun(function(o) o@x + o@y)
  expect_identical(pool_sapply(list(obj, obj), slot_sum), c(3, 3))
  expect_identical(pool_lapply(list(obj), slot_sum),
                   parallel::parLapply(cl, list(obj), slot_sum))

  # creating objects on the workers needs the class there too
  pool_evalq({
    methods::setClass("BgPoolPoint",
                      methods::representation(x = "numeric", y = "numeric"),
                      where = globalenv())
    NULL
  })
  parallel::clusterEvalQ(cl, {
    methods::setClass("BgPoolPoint",
                      methods::representation(x = "numeric", y = "numeric"),
                      where = globalenv())
    NULL
  })
  mk <- global_fun(function(i) methods::new("BgPoolPoint", x = i, y = -i))
  made <- pool_lapply(c(3, 4), mk)
  expect_identical(made, list(methods::new("BgPoolPoint", x = 3, y = -3),
                              methods::new("BgPoolPoint", x = 4, y = -4)))
  expect_identical(made, parallel::parLapply(cl, c(3, 4), mk))
})

test_that("R6 objects work on workers and come back working", {
  local_pool(test_pool_size())
  Counter <- R6::R6Class("Counter", public = list(
    n = 0,
    add = function(k = 1) {
      self$n <- self$n + k
      invisible(self)
    },
    get = function() self$n
  ))
  obj <- Counter$new()
  obj$add(5)

  expect_identical(pool_sapply(list(obj), function(o) { o$add(2); o$get() }), 7)
  # the master's object is not modified by the worker
  expect_identical(obj$get(), 5)

  back <- pool_lapply(list(obj), function(o) { o$add(1); o })[[1]]
  expect_s3_class(back, c("Counter", "R6"))
  expect_identical(back$get(), 6)
  expect_identical(back$add(10)$get(), 16)
  expect_identical(back$n, 16)
  expect_identical(obj$get(), 5)

  made <- pool_call(function(start) { o <- Counter$new(); o$add(start); o }, 40)
  expect_length(made, pool_size())
  expect_identical(vapply(made, function(o) o$get(), numeric(1)),
                   rep(40, pool_size()))
  expect_identical(made[[1]]$add(2)$get(), 42)
})

test_that("ALTREP compact sequences round-trip", {
  n <- test_pool_size()
  local_pool(n)
  cl <- local_psock(n)
  s <- 1:1e6
  expect_identical(rt_lapply(s), 1:1e6)
  expect_identical(rt_export(s), rep(list(1:1e6), n))
  expect_identical(pool_call(function() 1:1e6), rep(list(1:1e6), n))
  expect_identical(pool_sapply(list(s), function(v) v[length(v)]), 1000000L)
  expect_identical(rt_lapply(seq(2, 1e6, by = 2)), seq(2, 1e6, by = 2))
  expect_identical(rt_lapply(s), parallel::parLapply(cl, list(s), identity)[[1]])
})

test_that("a numeric vector over 200 MB round-trips", {
  # Not on CRAN: needs several GB of memory (copies in master and workers).
  skip_on_cran()
  n <- test_pool_size()
  local_pool(n)
  len <- 26e6
  big <- withr::with_seed(20240601, stats::runif(len))
  expect_gt(as.numeric(utils::object.size(big)), 200e6)

  back <- rt_lapply(big)
  expect_identical(back, big)
  rm(back)
  gc()

  gen <- global_fun(function(len) {
    set.seed(20240601)
    stats::runif(len)
  })
  made <- pool_call(gen, len)
  expect_length(made, n)
  for (v in made) expect_identical(v, big)
  rm(made)
  gc()

  summed <- pool_lapply(list(big), global_fun(function(v) c(length(v), sum(v))))[[1]]
  expect_identical(summed, c(len, sum(big)))
})
