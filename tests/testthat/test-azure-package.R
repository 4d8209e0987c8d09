# An AzureStor-style package that imports bgpool instead of AzureRMR
# (tests/fixtures/azstorlike), built and installed into a temporary library
# by this test and used from a fresh R process with library(), against a
# real Azure Storage server (Azurite, helper-azurite.R, stopped by its pid
# when this file ends).

azurite <- azurite_server()

# Runs R's own command-line tools; their output goes into failure messages.
run_r <- function(command, args, ..., libpaths = .libPaths()) {
  processx::run(file.path(R.home("bin"), command), args, ...,
                env = c("current", R_LIBS = paste(libpaths, collapse = .Platform$path.sep)),
                error_on_status = FALSE, stderr_to_stdout = TRUE, timeout = 300)
}

test_that("an AzureStor-style package importing bgpool transfers files from a fresh R process", {
  az <- azurite$get()
  fixture <- normalizePath(test_path("..", "fixtures", "azstorlike"), mustWork = TRUE)
  script <- normalizePath(test_path("..", "fixtures", "use-azstorlike.R"), mustWork = TRUE)

  # build, then install into a temporary library of its own
  build_dir <- withr::local_tempdir("azstorlike-build-")
  built <- run_r("R", c("CMD", "build", "--no-build-vignettes", "--no-manual", fixture), wd = build_dir)
  expect_identical(built$status, 0L, info = built$stdout)
  tarball <- list.files(build_dir, "^azstorlike_0\\.0\\.1\\.tar\\.gz$", full.names = TRUE)
  expect_length(tarball, 1L)
  lib <- normalizePath(withr::local_tempdir("azstorlike-lib-"))
  installed <- run_r("R", c("CMD", "INSTALL", paste0("--library=", lib), tarball))
  expect_identical(installed$status, 0L, info = installed$stdout)
  expect_true(file.exists(file.path(lib, "azstorlike", "Meta", "package.rds")))
  expect_false(lib %in% normalizePath(.libPaths()))

  src_dir <- withr::local_tempdir("azstorlike-src-")
  files <- make_file_set(src_dir, 60, min_size = 1024, max_size = 2 * 1024^2, seed = 4)
  back_dir <- withr::local_tempdir("azstorlike-back-")
  out_file <- tempfile("azstorlike-", fileext = ".rds")
  withr::defer(unlink(out_file))

  # a fresh R process that sees the temporary library and this session's
  used <- run_r("Rscript", c(script, az$url, azurite_key, src_dir, back_dir, out_file),
                libpaths = c(lib, .libPaths()))
  expect_identical(used$status, 0L, info = used$stdout)
  expect_match(used$stdout, "azstorlike: done", fixed = TRUE)
  out <- readRDS(out_file)

  # it loaded the package from the temporary library, imports bgpool, and
  # the pool functions it calls are bgpool's
  expect_identical(normalizePath(dirname(out$package_path)), lib)
  expect_identical(normalizePath(out$libpaths[1]), lib)
  expect_true("bgpool" %in% out$imports)
  expect_false("AzureRMR" %in% out$imports)
  expect_setequal(out$description_imports, c("AzureStor", "bgpool"))
  expect_identical(unname(out$uses_bgpool), c(TRUE, TRUE, TRUE))
  expect_false(out$pool_before)

  # multiupload() made bgpool's pool of 2 (not AzureRMR's), whose workers
  # have the master's library path and ran the package's closures
  expect_null(out$upload_value)
  expect_identical(out$pool_size, 2L)
  expect_false(out$azurermr_pool)
  expect_length(out$worker_libpaths, 2L)
  for (paths in out$worker_libpaths) expect_identical(paths, out$libpaths)
  expect_identical(out$workers_loaded_azstorlike, c(TRUE, TRUE))

  # every file is on the server with its size, and the MD5 that put_md5
  # (passed through MoreArgs) stored
  rel <- sort(files$rel)
  expect_identical(out$dest, file.path("pkg", rel))
  blobs <- out$blobs[match(out$dest, out$blobs$name), ]
  expect_identical(nrow(out$blobs), nrow(files))
  expect_identical(blobs$name, out$dest)
  expect_identical(as.numeric(blobs$size), as.numeric(files$size[match(rel, files$rel)]))
  expect_identical(blobs[["Content-MD5"]], out$src_md5_base64)

  # multidownload() with check_md5 brought every file back intact, on the
  # same two workers
  expect_identical(out$src_md5, md5(file.path(src_dir, rel)))
  expect_identical(out$back_md5, out$src_md5)
  expect_length(list.files(back_dir), nrow(files))
  expect_true(out$same_workers)

  # a failing transfer in the package's call: bgpool's error names it, the
  # others went up, and the pool still works
  expect_true("bgpool_task_error" %in% out$error_class)
  expect_match(out$error_message, "element 4\\b")
  expect_match(out$error_message, file.path(src_dir, "missing.bin"), fixed = TRUE)
  expect_match(out$error_message, "cannot open the connection", fixed = TRUE)
  expect_identical(as.integer(out$error_failed), 4L)
  expect_setequal(out$again_blobs, out$again_expected)
  expect_identical(out$after_failure, c(1, 4, 9, 16))
  expect_true(out$pool_deleted)
})
