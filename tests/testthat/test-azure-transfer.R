# AzureStor's transfers through bgpool against a real Azure Storage server:
# Azurite, started on 127.0.0.1 (helper-azurite.R) and stopped by its pid
# when this file ends. Pools have azure_pool_size() (2) workers.

azurite <- azurite_server()
# this file's pool goes first (deferred last), then Azurite
withr::defer(suppressMessages(bgpool::delete_pool()))

# Upload sizes and names as list_blobs() reports them, in the order of `names`.
blob_sizes <- function(cont, names) {
  blobs <- AzureStor::list_blobs(cont)
  as.numeric(blobs$size[match(names, blobs$name)])
}

test_that("the seed's usage: a few hundred files of mixed sizes go up with pool_map() and come back intact", {
  az <- azurite$get()
  src_dir <- withr::local_tempdir("azure-src-")
  files <- make_file_set(src_dir, 200, min_size = 1024, max_size = 5 * 1024^2)
  expect_gt(sum(files$size), 50 * 1024^2)

  # the seed's code, with the container in the global environment
  had_cont <- exists("cont", envir = globalenv(), inherits = FALSE)
  if (had_cont) old_cont <- get("cont", envir = globalenv())
  withr::defer(if (had_cont) assign("cont", old_cont, envir = globalenv())
               else rm("cont", envir = globalenv()))
  cont <- AzureStor::create_blob_container(az$endpoint, "seed")
  assign("cont", cont, envir = globalenv())
  srcfiles <- files$path
  destfiles <- file.path("uploads", files$rel)

  # the seed's functions are written at the top level: their environment is
  # the global one, so the workers find `cont` only because it was exported
  at_top_level <- function(f) `environment<-`(f, globalenv())
  has_cont <- at_top_level(function() exists("cont", envir = globalenv(), inherits = FALSE))

  suppressMessages(delete_pool())  # a pool of its own size, whatever ran before
  suppressMessages(init_pool(azure_pool_size()))
  expect_identical(pool_size(), azure_pool_size())
  expect_identical(unlist(pool_call(has_cont)), rep(FALSE, azure_pool_size()))
  pool_export("cont")
  expect_identical(unlist(pool_call(has_cont)), rep(TRUE, azure_pool_size()))
  up <- pool_map(at_top_level(function(src, dest) AzureStor::storage_upload(cont, src, dest)),
                 src = srcfiles, dest = destfiles)
  expect_length(up, nrow(files))
  expect_identical(names(up), srcfiles)

  # every blob is there, with its name and size, and nothing else
  blobs <- AzureStor::list_blobs(cont)
  expect_setequal(blobs$name, destfiles)
  expect_identical(nrow(blobs), nrow(files))
  expect_identical(blob_sizes(cont, destfiles), as.numeric(files$size))

  # all of them back, through the pool, into a fresh tree
  back_dir <- withr::local_tempdir("azure-back-")
  backfiles <- file.path(back_dir, files$rel)
  for (d in unique(dirname(backfiles))) dir.create(d, recursive = TRUE)
  down <- pool_map(at_top_level(function(src, dest) AzureStor::storage_download(cont, src, dest)),
                   src = destfiles, dest = backfiles)
  expect_identical(names(down), destfiles)
  expect_true(all(file.exists(backfiles)))
  expect_identical(as.numeric(file.size(backfiles)), as.numeric(files$size))
  expect_identical(md5(backfiles), md5(srcfiles))
})

test_that("an AzureVM-style pattern: pool_lapply() over R6 objects whose methods call the server", {
  az <- azurite$get()
  suppressMessages(init_pool(azure_pool_size()))
  # A resource object in the manner of AzureVM's: an R6 object holding its
  # endpoint, whose methods make the HTTP calls and update its fields.
  # Methods live in an environment of their own (not this test's), as they
  # would in a package's namespace.
  Resource <- R6::R6Class("Resource",
    parent_env = new.env(parent = globalenv()),
    public = list(
      endpoint = NULL, name = NULL, status = "new", etag = NULL, size = NA_real_, pid = NA_integer_,
      initialize = function(endpoint, name) {
        self$endpoint <- endpoint
        self$name <- name
      },
      container = function() AzureStor::blob_container(self$endpoint, self$name),
      deploy = function(payload) {
        cont <- AzureStor::create_blob_container(self$endpoint, self$name)
        AzureStor::storage_upload(cont, rawConnection(charToRaw(payload)), "payload.txt")
        self$sync_fields()
        self$status <- "deployed"
        self$pid <- Sys.getpid()
        invisible(self)
      },
      sync_fields = function() {
        props <- AzureStor::get_storage_properties(self$container(), "payload.txt")
        self$etag <- props[["etag"]]
        self$size <- as.numeric(props[["content-length"]])
        invisible(self)
      },
      read = function() rawToChar(AzureStor::storage_download(self$container(), "payload.txt", NULL)),
      delete = function() {
        AzureStor::delete_blob_container(self$endpoint, self$name, confirm = FALSE)
        self$status <- "deleted"
        invisible(self)
      }
    ))
  names <- sprintf("resource-%02d", 1:8)
  resources <- lapply(names, function(n) Resource$new(az$endpoint, n))
  payloads <- vapply(names, function(n) strrep(paste0(n, ";"), match(n, names) * 100), "")

  deployed <- pool_map(function(r, payload) r$deploy(payload), resources, payloads,
                       USE.NAMES = FALSE)
  expect_length(deployed, length(names))
  for (i in seq_along(names)) {
    expect_true(R6::is.R6(deployed[[i]]))
    expect_identical(deployed[[i]]$name, names[i])
    expect_identical(deployed[[i]]$status, "deployed")
    expect_identical(deployed[[i]]$size, as.numeric(nchar(payloads[[i]])))
    expect_match(deployed[[i]]$etag, ".+")
  }
  workers <- unlist(pool_call(Sys.getpid))
  expect_true(all(vapply(deployed, function(r) r$pid, 1L) %in% workers))
  # the workers changed their copies; the master's objects are as they were
  expect_true(all(vapply(resources, function(r) r$status, "") == "new"))

  # the server has every container, and the objects read them back
  listed <- names(AzureStor::list_blob_containers(az$endpoint))
  expect_true(all(names %in% listed))
  contents <- pool_sapply(deployed, function(r) r$read())
  expect_identical(unname(contents), unname(payloads))
  synced <- pool_lapply(resources, function(r) r$sync_fields()$etag)
  expect_identical(unlist(synced), vapply(deployed, function(r) r$etag, ""))

  gone <- pool_lapply(deployed, function(r) r$delete()$status)
  expect_identical(unlist(gone), rep("deleted", length(names)))
  listed <- names(AzureStor::list_blob_containers(az$endpoint))
  expect_false(any(names %in% listed))
})

test_that("a failed upload (missing local file) names the file, the other transfers complete and the pool keeps working", {
  az <- azurite$get()
  suppressMessages(init_pool(azure_pool_size()))
  workers <- sort(unlist(pool_call(Sys.getpid)))
  src_dir <- withr::local_tempdir("azure-fail-")
  files <- make_file_set(src_dir, 24, min_size = 1024, max_size = 256 * 1024, seed = 2)
  cont <- AzureStor::create_blob_container(az$endpoint, "failed-upload")
  pool_export("cont", envir = environment())

  missing_file <- file.path(src_dir, "part03", "not-there.bin")
  srcs <- files$path
  srcs[7] <- missing_file
  dests <- file.path("f", files$rel)
  warned <- character()
  err <- withCallingHandlers(
    tryCatch(
      pool_map(function(src, dest) {
        AzureStor::storage_upload(cont, src, dest)
        dest
      }, src = srcs, dest = dests),
      error = identity),
    warning = function(w) {
      warned <<- c(warned, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  expect_s3_class(err, "bgpool_task_error")
  expect_identical(as.integer(err$failed), 7L)
  # file()'s own warning, from the worker, says which file
  expect_match(warned, "cannot open file '.*not-there\\.bin'", all = FALSE)
  msg <- conditionMessage(err)
  expect_match(msg, "element 7\\b")
  expect_match(msg, missing_file, fixed = TRUE)
  expect_match(msg, "cannot open the connection", fixed = TRUE)
  expect_length(err$errors, 1L)
  expect_match(conditionMessage(err$errors[[1]]), "cannot open the connection", fixed = TRUE)

  # no lost work: every other transfer finished, on the server too
  ok <- setdiff(seq_along(srcs), 7L)
  expect_length(err$results, length(srcs))
  expect_identical(unlist(err$results[ok], use.names = FALSE), dests[ok])
  expect_null(err$results[[7]])
  blobs <- AzureStor::list_blobs(cont)
  expect_setequal(blobs$name, dests[ok])
  expect_identical(blob_sizes(cont, dests[ok]), as.numeric(files$size[ok]))

  # the same workers go on: the missing file, once there, goes up
  expect_identical(sort(unlist(pool_call(Sys.getpid))), workers)
  file.copy(files$path[7], missing_file)
  again <- pool_map(function(src, dest) AzureStor::storage_upload(cont, src, dest),
                    src = missing_file, dest = dests[7])
  expect_identical(names(again), missing_file)
  expect_identical(blob_sizes(cont, dests[7]), as.numeric(files$size[7]))
  expect_identical(pool_sapply(1:6, function(i) i * 2L), 2L * 1:6)
})

test_that("a failed download (blob not on the server) names the blob, the other downloads complete and the pool keeps working", {
  az <- azurite$get()
  suppressMessages(init_pool(azure_pool_size()))
  workers <- sort(unlist(pool_call(Sys.getpid)))
  src_dir <- withr::local_tempdir("azure-fail-")
  files <- make_file_set(src_dir, 20, min_size = 1024, max_size = 512 * 1024, seed = 3)
  cont <- AzureStor::create_blob_container(az$endpoint, "failed-download")
  blobs <- file.path("d", files$rel)
  pool_export("cont", envir = environment())
  pool_map(function(src, dest) AzureStor::storage_upload(cont, src, dest),
           src = files$path, dest = blobs)

  wanted <- append(blobs, "d/never-uploaded.bin", after = 11)
  back_dir <- withr::local_tempdir("azure-back-")
  dests <- file.path(back_dir, sprintf("%02d.bin", seq_along(wanted)))
  err <- tryCatch(
    pool_map(function(src, dest) {
      AzureStor::storage_download(cont, src, dest)
      tools::md5sum(dest)[[1]]
    }, src = wanted, dest = dests),
    error = identity)
  expect_s3_class(err, "bgpool_task_error")
  expect_identical(as.integer(err$failed), 12L)
  msg <- conditionMessage(err)
  expect_match(msg, "element 12\\b")
  expect_match(msg, "d/never-uploaded.bin", fixed = TRUE)
  expect_match(msg, "Not Found (HTTP 404)", fixed = TRUE)
  expect_true(inherits(err$errors[[1]], "http_404"))

  ok <- setdiff(seq_along(wanted), 12L)
  expect_identical(unlist(err$results[ok], use.names = FALSE), md5(files$path))
  expect_identical(md5(dests[ok]), md5(files$path))

  expect_identical(sort(unlist(pool_call(Sys.getpid))), workers)
  again <- pool_map(function(src, dest) AzureStor::storage_download(cont, src, dest, overwrite = TRUE),
                    src = blobs[1:4], dest = dests[1:4])
  expect_identical(names(again), blobs[1:4])
  expect_identical(md5(dests[1:4]), md5(files$path[1:4]))
})
