test_that("seed example: exported global is visible to pool_sapply tasks", {
  had_x <- exists("x", envir = globalenv(), inherits = FALSE)
  if (had_x) old_x <- get("x", envir = globalenv())
  withr::defer({
    if (had_x) assign("x", old_x, envir = globalenv())
    else if (exists("x", envir = globalenv(), inherits = FALSE))
      rm("x", envir = globalenv())
  })
  withr::defer(suppressMessages(delete_pool()))

  suppressMessages(delete_pool())
  expect_message(init_pool(test_pool_size()), "Creating background pool")
  assign("x", 42, envir = globalenv())
  pool_export("x")
  res <- pool_sapply(1:10, function(y) x + y)
  expect_identical(res, as.numeric(43:52))
  expect_type(res, "double")

  ref <- with_psock(test_pool_size(), {
    parallel::clusterExport(cl, "x")
    parallel::parSapply(cl, 1:10, function(y) x + y)
  })
  expect_identical(res, ref)
})
