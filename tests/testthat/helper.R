# Shared helpers for the bgpool test suite.

# How a shared segment of vector data shows among a process's descriptors
# (/proc/<pid>/fd) and mappings (/proc/<pid>/maps): a memfd on Linux, an
# unlinked shm_open() file in the POSIX-only build. (The pool's cancel
# board, "bgpool_cancel", is not one.)
segment_pattern <- "(memfd:bgpool|/bgpool-[0-9a-f]{12}) \\(deleted\\)"

# Whether the suite runs against the "psock" backend (Windows's; .ci/test.R
# sets BGPOOL_BACKEND=psock), and a skip for what only the native backend
# has, saying what.
on_psock <- function() identical(Sys.getenv("BGPOOL_BACKEND"), "psock")
skip_on_psock <- function(why) {
  if (on_psock()) skip(paste("not a feature of the psock backend:", why))
}

# Number of workers to use in tests: 2, but never more than 2 and never
# more than R CMD check allows when _R_CHECK_LIMIT_CORES_ is set.
test_pool_size <- function() {
  n <- 2L
  limit <- Sys.getenv("_R_CHECK_LIMIT_CORES_", "")
  if (nzchar(limit) && !identical(toupper(limit), "FALSE")) {
    n <- min(n, 2L)
  }
  n
}

# Is the process `pid` alive? A zombie (state "Z" in /proc/<pid>/stat)
# counts as dead once its other threads have ended too (a killed process's
# main thread can be a zombie while a thread still holds its descriptors).
pid_alive <- function(pid) {
  vapply(pid, function(p) {
    stat <- file.path("/proc", p, "stat")
    if (!file.exists(file.path("/proc", p))) return(FALSE)
    line <- tryCatch(readLines(stat, n = 1L, warn = FALSE),
                     error = function(e) character(0))
    if (length(line) == 0L) return(FALSE)
    # Format: "pid (comm) S ..."; comm may contain spaces/parens, so take the
    # first field after the last ')'.
    rest <- sub("^.*\\)\\s*", "", line)
    state <- substr(rest, 1L, 1L)
    !identical(state, "Z") || length(list.files(file.path("/proc", p, "task"))) > 1L
  }, logical(1), USE.NAMES = FALSE)
}

# Poll until none of `pids` is alive, for at most `timeout` seconds.
# Returns TRUE if they are all gone.
wait_pids_gone <- function(pids, timeout = 5) {
  deadline <- Sys.time() + timeout
  repeat {
    if (!any(pid_alive(pids))) return(TRUE)
    if (Sys.time() > deadline) return(FALSE)
    Sys.sleep(0.05)
  }
}

# Evaluate `code` with `cl` bound to a fresh parallel PSOCK cluster of `n`
# workers, stop the cluster afterwards and return the value of `code`.
# Used to compute reference results.
with_psock <- function(n, code) {
  cl <- parallel::makeCluster(n)
  on.exit(parallel::stopCluster(cl), add = TRUE)
  eval(substitute(code), list(cl = cl), parent.frame())
}

# A PSOCK cluster that is stopped when the calling test (frame) ends.
local_psock <- function(n = test_pool_size(), envir = parent.frame()) {
  cl <- parallel::makeCluster(n)
  withr::defer(parallel::stopCluster(cl), envir = envir)
  cl
}

# Create a fresh pool of `size` workers that is deleted when the calling
# test (frame) ends.
local_pool <- function(size = test_pool_size(), envir = parent.frame()) {
  suppressMessages(init_pool(size, restart = TRUE))
  withr::defer(suppressMessages(delete_pool()), envir = envir)
  invisible(size)
}

# Worker pids as reported by the package (integer vector), NULL if no pool.
pool_pids <- function() {
  info <- bgpool:::pool_info()
  if (is.null(info)) NULL else info$pids
}

# Give a function the global environment as its enclosure so that
# serialising it does not drag the (possibly large) test environment along.
global_fun <- function(f) {
  environment(f) <- globalenv()
  f
}

# Message of an error condition or of a plain error message.
error_text <- function(e) {
  if (inherits(e, "condition")) conditionMessage(e)
  else paste(as.character(e), collapse = " ")
}

# Check that the pool (if any) has exactly pool_size() live workers, and
# that no pool_info() is reported when there is no pool.
expect_pool_consistent <- function() {
  info <- bgpool:::pool_info()
  if (pool_exists()) {
    expect_false(is.null(info))
    expect_length(info$pids, pool_size())
    expect_true(all(pid_alive(info$pids)))
    expect_length(unique(info$pids), pool_size())
  } else {
    expect_null(info)
    expect_identical(pool_size(), 0L)
  }
}

# Keeps the session's random number state and kind as they are when the
# calling test (frame) ends. The kind is restored first, as RNGkind()
# reseeds.
local_rng_unchanged <- function(envir = parent.frame()) {
  withr::local_preserve_seed(.local_envir = envir)
  kind <- RNGkind()
  withr::defer(suppressWarnings(RNGkind(kind[1L], kind[2L], kind[3L])), envir = envir)
}

# The promise of every pool call that fails: its error accounts for each of
# the n elements exactly once, in `finished`, `failed` or `unfinished`, and
# `results` holds the right value of each finished element (`expected`, a
# list of n values) and nothing else.
expect_accounted <- function(err, expected) {
  n <- length(expected)
  all <- c(err$finished, err$failed, err$unfinished)
  expect_length(all, n)
  expect_setequal(all, seq_len(n))
  expect_length(err$results, n)
  expect_identical(err$results[err$finished], expected[err$finished])
  others <- setdiff(seq_len(n), err$finished)
  expect_true(all(vapply(err$results[others], is.null, NA)))
}

# How a lost worker ended, as the error says: the psock backend's workers
# are not its children, so it knows only that the connection closed.
died_how <- function(native) if (on_psock()) "ended: its connection closed" else native

# A daemon for a test file's tests (helper-sshd.R, helper-slurm.R): started
# at the first get(), stopped when the file ends. `available()` skips,
# saying why, where it cannot run; a start that fails skips the file's
# tests with its reason.
lazy_daemon <- function(what, available, start, stop, envir = parent.frame()) {
  state <- new.env(parent = emptyenv())
  state$get <- function() {
    available()
    if (!is.null(state$failure)) testthat::skip(state$failure)
    if (is.null(state$daemon)) {
      state$daemon <- tryCatch(start(), error = function(e) {
        state$failure <- paste(what, "could not start here:", conditionMessage(e))
        NULL
      })
      if (is.null(state$daemon)) testthat::skip(state$failure)
    }
    state$daemon
  }
  withr::defer(stop(state$daemon), envir = envir)
  state
}

# Bytes a process has read, of files and sockets (Linux).
read_bytes <- function(pid) {
  io <- readLines(file.path("/proc", pid, "io"))
  as.numeric(sub("^rchar: ", "", grep("^rchar: ", io, value = TRUE)))
}

# Exports a 100 MB vector to the pool and checks sums over its parts, run
# on the workers.
expect_big_export <- function() {
  big <- seq_len(12.5e6) + 0.5
  assign("big", big, envir = globalenv())
  withr::defer(rm("big", envir = globalenv()))
  pool_export("big")
  parts <- split(seq_along(big), rep(1:8, length.out = length(big)))
  sums <- pool_lapply(parts, global_fun(function(i) sum(big[i])))  # (the workers' big)
  expect_identical(unname(unlist(sums)), vapply(parts, function(i) sum(big[i]), 0, USE.NAMES = FALSE))
  invisible(big)
}
