# Azurite, Microsoft's Azure Storage emulator, as a real server for the
# AzureStor tests (test-azure-*.R). It is installed by .ci/azure-deps.sh
# (`npm ci` in tests/azurite, pinned by package.json and package-lock.json)
# and started here on 127.0.0.1, on a port the kernel picks, with in-memory
# persistence. A test file makes one server with
#
#   azurite <- azurite_server()      # at the file's top level
#   ...
#   test_that("...", { az <- azurite$get(); ... })
#
# The server starts at the first get() (a test that cannot have it skips
# only when node or npm is missing, or under R CMD check without an
# install, and fails otherwise), and is stopped by its process id when the
# file ends, also when a test failed.

# Azurite's well-known development account and key (public, in Azurite's
# documentation): they only ever reach the emulator on the loopback address.
azurite_account <- "devstoreaccount1"
azurite_key <- paste0("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/",
                      "K1SZFPTOtr/KBHBeksoGMGw==")

# Workers for the Azure tests: 2, or fewer when _R_CHECK_LIMIT_CORES_ asks.
azure_pool_size <- function() {
  limit <- Sys.getenv("_R_CHECK_LIMIT_CORES_", "")
  n <- 2L
  if (grepl("^[0-9]+$", limit)) n <- min(n, max(1L, as.integer(limit)))
  n
}

# Where Azurite is installed: tests/azurite, or BGPOOL_AZURITE_DIR.
azurite_dir <- function() {
  dir <- Sys.getenv("BGPOOL_AZURITE_DIR", "")
  if (!nzchar(dir)) dir <- testthat::test_path("..", "azurite")
  normalizePath(dir, mustWork = FALSE)
}

azurite_bin <- function() file.path(azurite_dir(), "node_modules", ".bin", "azurite-blob")

# R CMD check runs a copy of tests/ without node_modules (the package leaves
# it out): there the tests skip unless BGPOOL_AZURITE_DIR names an install.
# Elsewhere a missing install is a failure of the set-up (make test installs).
skip_if_azurite_not_copied <- function() {
  if (nzchar(Sys.getenv("_R_CHECK_PACKAGE_NAME_")) && !file.exists(azurite_bin()))
    testthat::skip(sprintf(
      "Azurite is not installed in %s (R CMD check's copy of tests/); set BGPOOL_AZURITE_DIR to an installed tests/azurite to run these tests (make check does, once `bash .ci/azure-deps.sh` has installed it)",
      azurite_dir()))
}

skip_if_no_node <- function() {
  tools <- c("node", "npm")
  absent <- tools[!nzchar(Sys.which(tools))]
  if (length(absent))
    testthat::skip(sprintf(
      "%s not installed: Azurite (the Azure Storage emulator) needs Node.js; `bash .ci/azure-deps.sh` installs it",
      paste(absent, collapse = " and ")))
}

# AzureStor is a Suggests that .ci/azure-deps.sh installs: its absence is a
# failure of the set-up, not a reason to skip.
need_azurestor <- function() {
  if (!requireNamespace("AzureStor", quietly = TRUE))
    stop("AzureStor is not installed: run `bash .ci/azure-deps.sh` (make test does)", call. = FALSE)
}

# A server handle whose get() starts Azurite once, and which is stopped when
# `envir` (by default the calling test file's top level) ends.
azurite_server <- function(envir = parent.frame()) {
  state <- new.env(parent = emptyenv())
  state$server <- NULL
  state$failure <- NULL
  state$get <- function() {
    skip_if_no_node()
    skip_if_azurite_not_copied()
    need_azurestor()
    if (!is.null(state$failure)) stop(state$failure, call. = FALSE)
    if (is.null(state$server)) {
      state$server <- tryCatch(azurite_start(), error = function(e) {
        state$failure <- conditionMessage(e)
        stop(e)
      })
    }
    state$server
  }
  withr::defer(azurite_stop(state$server), envir = envir)
  state
}

# Starts azurite-blob on 127.0.0.1 with --blobPort 0 (the kernel picks a free
# port), reads the port it listens on from its output, and waits until that
# port answers. Returns a list with the process, its pid, the port, the
# account URL, a storage endpoint and the log file.
azurite_start <- function(timeout = 30) {
  bin <- azurite_bin()
  if (!file.exists(bin))
    stop(sprintf("Azurite is not installed in %s: run `bash .ci/azure-deps.sh` (make test does)",
                 azurite_dir()), call. = FALSE)
  workdir <- tempfile("azurite-")
  dir.create(workdir)
  log <- file.path(workdir, "azurite.log")
  proc <- processx::process$new(
    bin,
    c("--inMemoryPersistence", "--extentMemoryLimit", "2048",
      "--blobHost", "127.0.0.1", "--blobPort", "0",
      "--disableTelemetry", "--silent"),
    wd = workdir, stdout = log, stderr = "2>&1",
    cleanup = TRUE, cleanup_tree = TRUE, supervise = TRUE)
  pid <- proc$get_pid()
  fail <- function(what) {
    try(azurite_stop(list(process = proc, pid = pid)), silent = TRUE)
    out <- if (file.exists(log)) paste(readLines(log, warn = FALSE), collapse = "\n") else ""
    stop(sprintf("Azurite (pid %d) %s. Its output:\n%s", pid, what, out), call. = FALSE)
  }
  deadline <- Sys.time() + timeout
  port <- NA_integer_
  repeat {
    if (is.na(port) && file.exists(log)) {
      lines <- readLines(log, warn = FALSE)
      hit <- regmatches(lines, regexpr("listens on http://127\\.0\\.0\\.1:[0-9]+", lines))
      if (length(hit)) port <- as.integer(sub(".*:", "", hit[1]))
    }
    if (!is.na(port) && port_answers(port)) break
    if (!proc$is_alive()) fail(sprintf("exited with status %s before it answered", proc$get_exit_status()))
    if (Sys.time() > deadline) fail(sprintf("did not answer within %d s", timeout))
    Sys.sleep(0.05)
  }
  url <- sprintf("http://127.0.0.1:%d/%s", port, azurite_account)
  list(process = proc, pid = pid, port = port, url = url, log = log,
       endpoint = AzureStor::storage_endpoint(url, key = azurite_key, service = "blob"))
}

# Does something accept connections on 127.0.0.1:port?
port_answers <- function(port) {
  con <- tryCatch(suppressWarnings(
    socketConnection("127.0.0.1", port, open = "r+b", blocking = TRUE, timeout = 1)),
    error = function(e) NULL)
  if (is.null(con)) return(FALSE)
  close(con)
  TRUE
}

# Stops the server by its process id: SIGTERM, then SIGKILL if it is still
# there after 5 s; reaps it.
azurite_stop <- function(server) {
  if (is.null(server)) return(invisible(FALSE))
  pid <- server$pid
  if (server$process$is_alive()) {
    tools::pskill(pid, tools::SIGTERM)
    server$process$wait(5000)
    if (server$process$is_alive()) {
      tools::pskill(pid, tools::SIGKILL)
      server$process$wait(5000)
    }
  }
  invisible(!server$process$is_alive())
}

# Files of mixed sizes under `dir`: `n` files (n >= 3) whose sizes spread
# from `min_size` to `max_size` bytes (log-uniformly, both ends included),
# with random content, in seven subfolders, one name with spaces. Returns a
# data frame with `path` (absolute), `rel` (relative to `dir`) and `size`.
make_file_set <- function(dir, n, min_size = 1024, max_size = 4 * 1024^2, seed = 1) {
  withr::local_seed(seed)
  sizes <- round(exp(stats::runif(n, log(min_size), log(max_size))))
  sizes[1:2] <- c(min_size, max_size)
  sub <- sprintf("part%02d", seq_len(n) %% 7)
  rel <- file.path(sub, sprintf("file-%03d.bin", seq_len(n)))
  rel[3] <- file.path(sub[3], "name with spaces.txt")
  for (d in unique(file.path(dir, sub))) dir.create(d, recursive = TRUE, showWarnings = FALSE)
  path <- file.path(dir, rel)
  for (i in seq_len(n))
    writeBin(as.raw(sample.int(256L, sizes[i], replace = TRUE) - 1L), path[i])
  data.frame(path = path, rel = rel, size = sizes, stringsAsFactors = FALSE)
}

# MD5 sums of files, unnamed.
md5 <- function(paths) unname(tools::md5sum(paths))
