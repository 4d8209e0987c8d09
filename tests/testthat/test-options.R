# init_pool()'s worker options (the PSOCK options AzureRMR passed through
# `...`) and its limit of 2 workers under R CMD check.

# A pool made with `...`, deleted when the calling test ends.
local_pool_with <- function(..., envir = parent.frame()) {
  suppressMessages(init_pool(..., restart = TRUE))
  withr::defer(suppressMessages(delete_pool()), envir = envir)
}

# The nice value of a process: field 19 of /proc/<pid>/stat.
niceness <- function(pid) {
  line <- readLines(file.path("/proc", pid, "stat"), warn = FALSE)
  fields <- strsplit(sub("^.*\\)\\s*", "", line), " ", fixed = TRUE)[[1L]]
  as.integer(fields[17L])  # fields after "pid (comm)" start at field 3
}

# An executable shell script in a temporary directory of the calling test.
local_script <- function(lines, envir = parent.frame()) {
  path <- file.path(withr::local_tempdir(.local_envir = envir), "script.sh")
  writeLines(c("#!/bin/sh", lines), path)
  Sys.chmod(path, "0755")
  path
}

test_that("rscript_args reach the workers' command line", {
  local_pool_with(2, rscript_args = c("--no-environ", "--max-ppsize=100000"))
  args <- pool_evalq(commandArgs())
  expect_length(args, 2L)
  for (a in args) expect_true(all(c("--no-environ", "--max-ppsize=100000") %in% a), info = paste(a, collapse = " "))
})

test_that("rscript names the program that starts the workers", {
  marker <- withr::local_tempfile()
  rscript <- local_script(c(sprintf("echo \"$@\" > '%s'", marker),
                            sprintf("exec '%s' \"$@\"", file.path(R.home("bin"), "Rscript"))))
  local_pool_with(2, rscript = rscript)
  expect_true(file.exists(marker))
  # the native template, or parallel's worker (the psock backend)
  expect_match(readLines(marker), if (on_psock()) "parallel:::.workRSOCK" else "bgpool:::template_main()",
               fixed = TRUE)
  expect_identical(pool_sapply(1:4, function(i) i * 2L), c(2L, 4L, 6L, 8L))

  err <- expect_error(init_pool(1, restart = TRUE, rscript = file.path(tempdir(), "no-such-Rscript")),
                      class = "bgpool_bad_argument")
  expect_match(conditionMessage(err), "no-such-Rscript is not a program that can be run", fixed = TRUE)
})

test_that("the native template runs R's binary itself, unless its options need Rscript", {
  skip_on_psock("parallel starts its workers with Rscript")
  rscript <- file.path(R.home("bin"), "Rscript")
  direct <- bgpool:::template_command(bgpool:::worker_options())
  expect_identical(direct$program, paste0(R.home("bin"), "/exec", Sys.getenv("R_ARCH"), "/R"))
  expect_identical(utils::tail(direct$env, 1L),
                   "R_DEFAULT_PACKAGES=datasets,utils,grDevices,graphics,stats,methods")
  # Rscript's own options, or an environment without the variables its
  # front end sets, keep Rscript
  verbose <- bgpool:::template_command(bgpool:::worker_options(rscript_args = "--verbose", methods = FALSE))
  expect_identical(verbose$program, rscript)
  expect_identical(verbose$args[1:2], c("--default-packages=datasets,utils,grDevices,graphics,stats",
                                        "--verbose"))
  withr::local_envvar(R_SHARE_DIR = NA)
  expect_identical(bgpool:::template_command(bgpool:::worker_options())$program, rscript)
  # and such a pool works as the direct one does
  local_pool_with(1)
  expect_identical(pool_evalq(search())[[1L]],
                   c(".GlobalEnv", paste0("package:", c("stats", "graphics", "grDevices", "utils",
                                                        "datasets", "methods")),
                     "Autoloads", "package:base"))
})

test_that("setup_timeout limits how long the workers may take to start", {
  slow <- local_script("exec sleep 5")  # a program that never connects
  suppressMessages(delete_pool())
  t0 <- Sys.time()
  err <- expect_error(suppressMessages(init_pool(1, rscript = slow, setup_timeout = 1)),
                      class = "bgpool_start_failed")
  # (parallel, under the psock backend, waits 5 seconds beyond setup_timeout)
  expect_lt(elapsed_since(t0), if (on_psock()) 9 else 4)
  expect_match(conditionMessage(err), "did not connect within 1 seconds", fixed = TRUE)
  expect_match(conditionMessage(err), "setup_timeout", fixed = TRUE)
  expect_false(pool_exists())
  expect_error(init_pool(1, setup_timeout = 0), "setup_timeout", class = "bgpool_bad_argument")
})

test_that("rscript_envs sets environment variables on the workers", {
  withr::local_envvar(BGPOOL_PASSED_ON = "from the master")
  local_pool_with(2, rscript_envs = c(BGPOOL_SET_HERE = "a value", "BGPOOL_PASSED_ON"))
  expect_identical(pool_evalq(Sys.getenv("BGPOOL_SET_HERE")), rep(list("a value"), 2L))
  expect_identical(pool_evalq(Sys.getenv("BGPOOL_PASSED_ON")), rep(list("from the master"), 2L))
  expect_error(init_pool(1, restart = TRUE, rscript_envs = c(BGPOOL_UNSET = NA)),
               "cannot unset variables (NA for BGPOOL_UNSET)", fixed = TRUE, class = "bgpool_bad_argument")
})

test_that("outfile collects what every worker prints in one file", {
  out <- withr::local_tempfile(fileext = ".log")
  local_pool_with(2, outfile = out)
  pids <- pool_pids()
  invisible(pool_call(function() {
    cat(sprintf("hello from pid %d\n", Sys.getpid()))
    flush(stdout())
  }))
  lines <- readLines(out)
  for (pid in pids) expect_true(sprintf("hello from pid %d", pid) %in% lines, info = paste(lines, collapse = "\n"))
  shown <- pool_output()
  expect_length(shown, 2L)
  expect_match(shown[[1L]], "hello from pid", fixed = TRUE)

  # a worker that dies reports the file's last lines
  err <- expect_error(pool_lapply(1:2, function(i) {
    if (i == 1L) {
      cat("last words before quitting\n")
      quit(status = 4)
    }
    Sys.sleep(0.5)
  }, chunk.size = 1), class = "bgpool_worker_died")
  expect_match(conditionMessage(err), "last words before quitting", fixed = TRUE)
  suppressMessages(delete_pool())
  expect_true(file.exists(out))  # the file is the user's: it outlives the pool
})

test_that("outfile must be in a directory that exists", {
  err <- expect_error(init_pool(1, restart = TRUE, outfile = file.path(tempdir(), "no", "such", "dir.log")),
                      class = "bgpool_bad_argument")
  expect_match(conditionMessage(err), "does not exist", fixed = TRUE)
})

test_that("outfile = \"\" sends the workers' output to the master's own output", {
  child <- local_r_child(quote({
    init_pool(2, outfile = "")
    invisible(pool_lapply(1:2, function(i) cat(sprintf("worker line %d\n", i))))
    save_result(list(output = unclass(pool_output())))
    delete_pool()
  }))
  res <- child_result(child, 60)
  expect_match(attr(res, "output"), "worker line 1", fixed = TRUE)
  expect_match(attr(res, "output"), "worker line 2", fixed = TRUE)
  expect_identical(res$output, c("", ""))
})

test_that("methods = FALSE leaves the methods package unattached on the workers", {
  local_pool_with(2)
  expect_identical(pool_evalq("package:methods" %in% search()), list(TRUE, TRUE))
  local_pool_with(2, methods = FALSE)
  expect_identical(pool_evalq("package:methods" %in% search()), list(FALSE, FALSE))
  expect_identical(pool_sapply(1:3, function(i) i + 1L), 2:4)
})

test_that("renice lowers the workers' priority, also of a worker that replaces a dead one", {
  base <- niceness(Sys.getpid())
  want <- min(19L, base + 7L)
  local_pool_with(2, renice = 7)
  pids <- pool_pids()
  expect_identical(vapply(pids, niceness, 1L), rep(want, 2L))
  expect_identical(niceness(Sys.getpid()), base)

  tools::pskill(pids[1], tools::SIGKILL)
  expect_true(wait_pids_gone(pids[1]))
  expect_identical(pool_sapply(1:2, function(i) i), 1:2)
  replacement <- pool_pids()[1]
  expect_false(replacement == pids[1])
  expect_identical(niceness(replacement), want)
  expect_error(init_pool(1, restart = TRUE, renice = "low"), "renice", class = "bgpool_bad_argument")
})

test_that("an unknown option is ignored with a warning naming it; PSOCK-only options quietly", {
  expect_warning(local_pool_with(1, frobnicate = TRUE),
                 "init_pool() ignores unknown option `frobnicate`; see ?init_pool", fixed = TRUE)
  expect_identical(pool_size(), 1L)
  expect_warning(local_pool_with(1, foo = 1, bar = 2), "unknown options `foo`, `bar`", fixed = TRUE)
  expect_no_warning(local_pool_with(1, type = "PSOCK", master = "localhost", port = 11999L,
                                    timeout = 60, setup_strategy = "sequential", homogeneous = TRUE,
                                    useXDR = FALSE, manual = FALSE, rshcmd = "ssh", user = "me"))
  expect_identical(pool_evalq(1L), list(1L))
  expect_error(init_pool(1, restart = TRUE, outfile = "a", outfile = "b"), "more than once",
               class = "bgpool_bad_argument")
})

test_that("_R_CHECK_LIMIT_CORES_ caps the pool at 2 workers, unless it is \"false\"", {
  withr::local_envvar(`_R_CHECK_LIMIT_CORES_` = "TRUE")
  suppressMessages(delete_pool())
  withr::defer(suppressMessages(delete_pool()))
  msgs <- capture_messages(init_pool(4))
  expect_identical(pool_size(), 2L)
  expect_length(grep("starting 2 workers, not 4, as _R_CHECK_LIMIT_CORES_ is set", msgs, fixed = TRUE), 1L)
  expect_length(unlist(pool_call(Sys.getpid)), 2L)
  # a capped pool is kept as it is by the same call
  pids <- pool_pids()
  suppressMessages(init_pool(4))
  expect_identical(pool_pids(), pids)

  withr::local_envvar(`_R_CHECK_LIMIT_CORES_` = "False")
  msgs <- capture_messages(init_pool(4))
  expect_identical(pool_size(), 4L)
  expect_false(any(grepl("_R_CHECK_LIMIT_CORES_", msgs, fixed = TRUE)))
  expect_length(unique(unlist(pool_call(Sys.getpid))), 4L)

  withr::local_envvar(`_R_CHECK_LIMIT_CORES_` = NA)
  suppressMessages(init_pool(3, restart = TRUE))
  expect_identical(pool_size(), 3L)
})
