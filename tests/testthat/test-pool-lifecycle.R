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
