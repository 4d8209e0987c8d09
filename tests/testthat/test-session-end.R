# The pool goes with the R session (finalizer run at exit) and with the
# package (unloading it), even when delete_pool() is never called.

test_that("an R session that ends without delete_pool() leaves no workers or files", {
  skip_if_not_installed("callr")
  info <- callr::r(function() {
    bgpool::init_pool(2)
    bgpool::pool_sapply(1:4, sqrt)
    bgpool:::pool_info()
  }, libpath = .libPaths())
  expect_length(info$pids, 2)
  expect_true(wait_pids_gone(info$pids))
  expect_false(dir.exists(info$dir))
})

test_that("unloading bgpool deletes the pool", {
  skip_if_not_installed("callr")
  res <- callr::r(function() {
    bgpool::init_pool(2)
    info <- bgpool:::pool_info()
    unloadNamespace("bgpool")
    deadline <- Sys.time() + 5
    alive <- function() any(file.exists(file.path("/proc", info$pids)))
    while (alive() && Sys.time() < deadline) Sys.sleep(0.05)
    list(alive = alive(), dir = dir.exists(info$dir), loaded = isNamespaceLoaded("bgpool"))
  }, libpath = .libPaths())
  expect_false(res$loaded)
  expect_false(res$alive)
  expect_false(res$dir)
})
