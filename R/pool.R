# The pool's lifecycle: create, reset, delete, inspect.

# The session's one pool: `pool` (the native handle), `size`, `setup` and
# `segments` (the workers' recorded set-up, R/setup.R), `lib_paths` (the
# library paths the workers were given) and `cluster` (pool_cluster()'s
# object, once asked for).
.bgpool <- new.env(parent = emptyenv())

#' Create, reset or delete the background pool
#'
#' `init_pool()` creates the pool of background R processes, or, when one of
#' at least `size` workers exists and no restart is asked for, resets it: each
#' worker changes to the master's working directory and its global
#' environment is emptied, while the worker processes stay the same.
#' `delete_pool()` stops all workers and removes their sockets and files.
#'
#' @param size The number of background R processes on this machine. Under `R CMD check`
#'   (when the environment variable `_R_CHECK_LIMIT_CORES_` is set and not
#'   `"false"`) at most 2, with a message, as the check allows 2 cores.
#' @param restart Whether to delete an existing pool and start afresh.
#' @param ... Worker options, by name, as AzureRMR passed them to
#'   `parallel::makeCluster()` for a PSOCK cluster. They take effect when a
#'   pool is created (not when an existing one is reset), and workers that
#'   replace dead ones get them too.
#'   * `rscript`: the Rscript program that starts the workers (default: the
#'     running R's own). It must find bgpool in the master's library paths.
#'   * `rscript_args`: further arguments for it, such as `"--no-environ"`.
#'   * `rscript_envs`: environment variables for the workers, as in
#'     parallelly: named elements set variables (`c(MY_VAR = "1")`),
#'     unnamed ones name variables of the master to pass on (workers
#'     inherit the master's environment anyway). Unsetting one with `NA`
#'     is not supported.
#'   * `outfile`: where the workers' standard output and error go. By
#'     default a log file per worker in the pool's directory, whose last
#'     lines [pool_output()] and errors about a worker that died show. A
#'     file path: all workers append to that file, which outlives the pool
#'     (what several print at once may interleave); `pool_output()` and
#'     those errors show its last lines, which may come from any worker. `"/dev/null"` (parallel's default) discards the
#'     output. `""`: the master process's own standard output and error, as
#'     for a PSOCK cluster: the terminal R runs in, which R's console in
#'     RStudio or a knitted document does not show; there is then nothing
#'     for `pool_output()` and those errors to show.
#'   * `methods`: whether the workers attach the methods package (default
#'     `TRUE`).
#'   * `renice`: how much to lower the workers' priority, as `nice` does:
#'     their niceness is the master's plus this (see [tools::psnice()]); a
#'     negative value needs privileges. Default `NA`: no change.
#'   * `setup_timeout`: seconds to wait for the workers to start (default
#'     `getOption("bgpool.start_timeout", 60)`), also when replacing one.
#'
#'   These PSOCK options are accepted and have no effect, because bgpool
#'   starts its workers itself (on other machines through `remote`):
#'   `type`, `master`, `port`, `timeout`, `setup_strategy`, `homogeneous`,
#'   `useXDR`, `manual`, `rshcmd` and `user`. Any other option is ignored
#'   with a warning.
#' @param remote `NULL`, or workers on other machines, from [ssh_workers()]
#'   or [slurm_workers()]:
#'   they join the `size` workers on this machine (`size` is then 0 unless
#'   given). An existing pool is reset, not created afresh, only when it
#'   has the same remote workers.
#' @param seed `NULL`, or a seed (`TRUE` takes one from the session's random
#'   numbers) that gives each worker its own L'Ecuyer-CMRG random number
#'   stream, as [parallel::clusterSetRNGStream()] does: worker 1 the
#'   `.Random.seed` of `set.seed(seed, kind = "L'Ecuyer-CMRG")`, worker
#'   `j + 1` [parallel::nextRNGStream()] of worker `j`'s. The session's own
#'   random number state is left as it was. For results that do not depend
#'   on which worker runs which task, use the `.seed` argument of
#'   [pool_lapply()] instead.
#' @return `init_pool()` and `delete_pool()` return `NULL` invisibly;
#'   `pool_exists()` a logical; `pool_size()` the number of workers (`0L`
#'   when there is no pool).
#' @examples
#' init_pool(2)
#' pool_size()
#' pool_evalq(Sys.getpid())
#' delete_pool()
#' pool_exists()
#'
#' # low-priority workers whose output goes to one file
#' log <- tempfile(fileext = ".log")
#' init_pool(2, renice = 10, outfile = log)
#' invisible(pool_lapply(1:2, function(i) cat(sprintf("task %d\n", i))))
#' readLines(log)
#' delete_pool()
#' unlink(log)
#' @export
init_pool <- function(size = 10, restart = FALSE, ..., seed = NULL, remote = NULL) {
  remote <- check_remote(remote)
  if (!is.null(remote) && missing(size)) size <- 0L
  size <- check_size(size, allow_none = !is.null(remote))
  if (!is.logical(restart) || length(restart) != 1L || is.na(restart))
    abort("init_pool(): `restart` must be TRUE or FALSE", "bgpool_bad_argument")
  seed <- seed_stream(seed, "init_pool()", "seed")
  options <- worker_options(...)
  size <- limit_cores(size)
  # a pool inherited from the process this one was forked from is not ours
  if (!is.null(.bgpool$pool) && !pool_exists()) stop_pool()
  if (restart || !pool_exists() || local_size() < size ||
        !identical(.bgpool$remote, remote)) {
    delete_pool()
    message("Creating background pool")
    create_pool(size, options, remote)
  } else {
    forget_setup()
    live_pool("init_pool()")  # a worker that died is replaced first
    on_workers("init_pool()", worker_reset, list(getwd(), .libPaths()), seq_len(pool_size()))
  }
  if (!is.null(seed)) seed_workers("init_pool()", seed)
  invisible(NULL)
}

#' @rdname init_pool
#' @export
delete_pool <- function() {
  if (!pool_exists())
    return(invisible(NULL))
  message("Deleting background pool")
  stop_pool()
  invisible(NULL)
}

#' @rdname init_pool
#' @export
pool_exists <- function() {
  !is.null(.bgpool$pool) && .bgpool$backend$owned(.bgpool$pool)
}

#' @rdname init_pool
#' @export
pool_size <- function() {
  if (pool_exists()) .bgpool$size else 0L
}

check_size <- function(size, allow_none = FALSE) {
  least <- if (allow_none) 0 else 1
  ok <- is.numeric(size) && length(size) == 1L && !is.na(size) &&
    size >= least && size == round(size) && is.finite(size)
  if (!ok)
    abort(sprintf("init_pool(): `size` must be a whole number of workers, %d or more%s, not %s",
                  least, if (allow_none) " (those on this machine)" else "", deparse1(size)),
          "bgpool_bad_argument")
  as.integer(size)
}

# The workers on this machine.
local_size <- function() pool_size() - remote_size(.bgpool$remote)

# R CMD check allows a package 2 cores, and sets _R_CHECK_LIMIT_CORES_ to
# say so.
limit_cores <- function(size) {
  limit <- Sys.getenv("_R_CHECK_LIMIT_CORES_", "")
  if (size <= 2L || !nzchar(limit) || tolower(limit) == "false")
    return(size)
  message(sprintf("init_pool(): starting 2 workers, not %d, as _R_CHECK_LIMIT_CORES_ is set (R CMD check allows 2 cores)",
                  size))
  2L
}

# PSOCK options about how parallel starts and reaches its workers, which bgpool does its own way.
no_effect_options <- c("type", "master", "port", "timeout", "setup_strategy", "homogeneous",
                       "useXDR", "manual", "rshcmd", "user")

# The worker options of init_pool(...), checked, with their defaults.
worker_options <- function(...) {
  given <- list(...)
  if (length(given) && (is.null(names(given)) || any(!nzchar(names(given)))))
    abort("init_pool(): worker options in `...` must be named, e.g. rscript_args = \"--vanilla\"",
          "bgpool_bad_argument")
  twice <- unique(names(given)[duplicated(names(given))])
  if (length(twice))
    abort(sprintf("init_pool(): option `%s` is given more than once; give it once", twice[1L]),
          "bgpool_bad_argument")
  options <- list(rscript = default_rscript(), rscript_args = character(),
                  rscript_envs = character(), outfile = NULL, methods = TRUE,
                  renice = NA_integer_, setup_timeout = getOption("bgpool.start_timeout", 60))
  unknown <- setdiff(names(given), c(names(options), no_effect_options))
  if (length(unknown))
    warning(sprintf("init_pool() ignores unknown option%s %s; see ?init_pool for the options it takes",
                    if (length(unknown) > 1L) "s" else "", paste0("`", unknown, "`", collapse = ", ")),
            call. = FALSE)
  given <- given[intersect(names(given), names(options))]
  options[names(given)] <- given
  options$rscript <- check_rscript(options$rscript)
  if (!is.character(options$rscript_args) || anyNA(options$rscript_args))
    bad_option("rscript_args", "a character vector of arguments for Rscript")
  options$rscript_envs <- check_envs(options$rscript_envs)
  options$outfile <- check_outfile(options$outfile)
  if (!is_flag(options$methods))
    bad_option("methods", "TRUE or FALSE")
  renice <- options$renice
  if (length(renice) != 1L || !(is.numeric(renice) || is.na(renice)) ||
        (!is.na(renice) && renice != round(renice)))
    bad_option("renice", "a whole number (how much to lower the workers' priority) or NA")
  options$renice <- as.integer(renice)
  timeout <- options$setup_timeout
  if (!is.numeric(timeout) || length(timeout) != 1L || is.na(timeout) || timeout <= 0 ||
        !is.finite(timeout))
    bad_option("setup_timeout", "a positive number of seconds")
  options
}

default_rscript <- function() file.path(R.home("bin"), "Rscript")

bad_option <- function(name, what) {
  abort(sprintf("init_pool(): option `%s` must be %s", name, what), "bgpool_bad_argument")
}

is_flag <- function(x) is.logical(x) && length(x) == 1L && !is.na(x)

# The program, found on the PATH when given without a directory, as
# parallel's shell would.
check_rscript <- function(rscript) {
  if (!is.character(rscript) || length(rscript) != 1L || is.na(rscript) || !nzchar(rscript))
    bad_option("rscript", "the path of an Rscript program")
  path <- if (grepl("/", rscript, fixed = TRUE)) path.expand(rscript) else Sys.which(rscript)
  if (!nzchar(path) || !file.exists(path) || dir.exists(path) || file.access(path, 1L) != 0L)
    abort(sprintf("init_pool(): option `rscript`: %s is not a program that can be run; give the path of an Rscript program, such as %s",
                  rscript, file.path(R.home("bin"), "Rscript")), "bgpool_bad_argument")
  unname(path)
}

# "NAME=value" strings; unnamed elements take the master's value.
check_envs <- function(envs) {
  if (!length(envs)) return(character())
  nms <- names(envs)
  if (is.null(nms)) nms <- rep("", length(envs))
  if (is.atomic(envs) && anyNA(envs))
    abort(sprintf("init_pool(): option `rscript_envs` cannot unset variables (NA for %s); workers inherit the master's environment, so unset it there with Sys.unsetenv()",
                  nms[is.na(envs)][1L]), "bgpool_bad_argument")
  if (!is.character(envs))
    bad_option("rscript_envs", "a character vector, such as c(MY_VAR = \"value\")")
  pass_on <- !nzchar(nms)
  nms[pass_on] <- envs[pass_on]
  envs[pass_on] <- Sys.getenv(envs[pass_on], NA_character_, names = FALSE)
  keep <- !is.na(envs)  # a variable the master has not is not passed on
  paste0(nms[keep], "=", envs[keep])
}

# NULL (a log per worker), "" (the master's output) or an absolute path.
check_outfile <- function(outfile) {
  if (is.null(outfile)) return(NULL)
  if (!is.character(outfile) || length(outfile) != 1L || is.na(outfile))
    bad_option("outfile", "a file path, or \"\" for the master's own output")
  if (!nzchar(outfile)) return("")
  dir <- dirname(path.expand(outfile))
  if (!dir.exists(dir))
    abort(sprintf("init_pool(): option `outfile`: the directory %s does not exist; create it or choose another file",
                  dir), "bgpool_bad_argument")
  path <- file.path(normalizePath(dir), basename(outfile))
  writable <- if (file.exists(path)) file.access(path, 2L) == 0L && !dir.exists(path)
              else file.access(dir, 2L) == 0L
  if (!writable)
    abort(sprintf("init_pool(): option `outfile`: %s cannot be written to; choose a file you can write",
                  path), "bgpool_bad_argument")
  path
}

create_pool <- function(size, options, remote) {
  load_rcpp()  # in a native worker, which starts without it (see .onLoad)
  backend <- choose_backend()
  if (backend$name == "native") remove_orphaned_dirs()
  started <- start_remote(remote)
  handle <- tryCatch(
    backend$create(size, options, started),
    error = function(e) {
      stop_remote(started)
      abort(sprintf("init_pool(): could not start the workers: %s", conditionMessage(e)),
            "bgpool_start_failed")
    })
  .bgpool$backend <- backend
  .bgpool$pool <- handle
  .bgpool$size <- size + remote_size(remote)
  .bgpool$remote <- remote
  .bgpool$started <- started
  .bgpool$renice <- options$renice
  forget_setup()
  renice_workers(seq_len(.bgpool$size))
}

# Lowers the workers' priority (option `renice`) as `nice` does: their
# niceness becomes the master's plus `renice`.
renice_workers <- function(slots) {
  renice <- .bgpool$renice
  if (is.null(renice) || is.na(renice)) return(invisible())
  state <- .bgpool$backend$state(.bgpool$pool)
  pids <- state$pids[slots][!nzchar(state$hosts[slots])]  # (this machine's only)
  value <- min(19L, max(-20L, tools::psnice(Sys.getpid()) + renice))
  tools::psnice(pids, value)
  if (!identical(tools::psnice(pids), rep(as.integer(value), length(pids))))
    warning(sprintf("init_pool(): could not set the workers' niceness to %d (`renice` = %d); raising their priority needs privileges",
                    value, renice), call. = FALSE)
  invisible()
}

# A master that was killed (SIGKILL, crash) cannot remove its pool's
# directory; its workers exit on their own. Such directories, found in
# other sessions' temporary directories, are removed here: those whose
# lock no live process holds (the kernel released the dead master's).
remove_orphaned_dirs <- function() {
  dirs <- Sys.glob(file.path(dirname(tempdir()), "Rtmp*", "bgpool-*-*"))
  mine <- file.info(dirs, extra_cols = TRUE)$uname %in% Sys.info()[["effective_user"]]
  for (dir in dirs[mine])
    if (pool_dir_abandoned(dir)) unlink(dir, recursive = TRUE)
}

# Deletes the pool of this process; a pool inherited by a forked process
# is only let go of (the process that made it still uses it).
stop_pool <- function() {
  handle <- .bgpool$pool
  backend <- .bgpool$backend
  started <- .bgpool$started
  owned <- backend$owned(handle)
  close_cluster()
  if (owned) forget_setup()
  rm(list = ls(.bgpool, all.names = TRUE), envir = .bgpool)
  backend$stop(handle)
  if (owned) stop_remote(started)
}

# The pool's handle, after replacing any worker that died since the last
# call: a replacement starts in the master's working directory with
# everything exported since init_pool(). Replies owed to calls sent through
# the pool's cluster are read first (unless `drain_cluster` is FALSE: the
# cluster itself sends another), so that workers are free for this call.
live_pool <- function(caller, drain_cluster = TRUE) {
  if (!pool_exists())
    stop(no_pool_error(caller))
  handle <- .bgpool$pool
  backend <- .bgpool$backend
  if (!backend$waits_for_cluster && backend$cluster_busy(handle))
    abort(sprintf("%s: calls sent through pool_cluster() (futures, say) are not collected yet, and with the psock backend a pool call cannot run alongside them; collect them first (future::value(), or parallel's functions that sent them)",
                  caller), "bgpool_cluster_busy")
  replaced <- backend$prepare(handle, drain_cluster)
  if (length(replaced)) {
    tryCatch(backend$replace(handle, replaced), error = function(e)
      abort(sprintf("%s: could not start a worker to replace one that died: %s",
                    caller, conditionMessage(e)), "bgpool_start_failed"))
    renice_workers(replaced)
    replay_setup(caller, replaced)
  }
  # Workers see library paths the master added after the pool started.
  if (!identical(.libPaths(), .bgpool$lib_paths) && !backend$cluster_busy(handle)) {
    on_workers(caller, worker_lib_paths, list(.libPaths()), seq_len(pool_size()))
    .bgpool$lib_paths <- .libPaths()
  }
  handle
}

#' Show what the workers printed
#'
#' Workers' standard output and standard error (output of `print()`, `cat()`,
#' `message()`) go to a log file per worker, not to the console. This returns
#' the last lines of each, for diagnostics; errors about a worker that died
#' include its last lines too. With the `outfile` option of [init_pool()],
#' all workers write to one file, whose last lines are shown for each; with
#' `outfile = ""` there is nothing to show.
#'
#' @param lines How many of the last lines to show per worker.
#' @return A character vector, one element per worker, of class
#'   `bgpool_output` (printed as a section per worker).
#' @examples
#' init_pool(2)
#' invisible(pool_lapply(1:2, function(i) cat("hello from task", i, "\n")))
#' pool_output()
#' delete_pool()
#' @export
pool_output <- function(lines = 20) {
  if (!pool_exists())
    stop(no_pool_error("pool_output()"))
  text <- vapply(.bgpool$backend$state(.bgpool$pool)$logs, function(path) {
    # a file with something in it: a terminal or a pipe (size 0) would wait
    content <- if (isTRUE(file.size(path) > 0)) readLines(path, warn = FALSE) else character()
    paste(utils::tail(content, lines), collapse = "\n")
  }, "", USE.NAMES = FALSE)
  structure(text, class = "bgpool_output")
}

#' @export
print.bgpool_output <- function(x, ...) {
  for (i in seq_along(x))
    cat(sprintf("-- worker %d --\n%s\n", i, x[[i]]))
  invisible(x)
}

# Internal, for tests and diagnostics: the workers' pids and the pool's
# private directory, or NULL without a pool.
pool_info <- function() {
  if (!pool_exists()) return(NULL)
  c(.bgpool$backend$state(.bgpool$pool), backend = .bgpool$backend$name)
}
