# The pool's lifecycle: create, reset, delete, inspect.

# The session's one pool: `pool` (the native handle), `size`, `exports`
# (what pool_export() sent since init_pool(), replayed to any worker that
# replaces a dead one), `segments` (the shared memory of large exports),
# `lib_paths` (the library paths the workers were given) and `cluster`
# (pool_cluster()'s object, once asked for).
.bgpool <- new.env(parent = emptyenv())

#' Create, reset or delete the background pool
#'
#' `init_pool()` creates the pool of background R processes, or, when one of
#' at least `size` workers exists and no restart is asked for, resets it: each
#' worker changes to the master's working directory and its global
#' environment is emptied, while the worker processes stay the same.
#' `delete_pool()` stops all workers and removes their sockets and files.
#'
#' @param size The number of background R processes.
#' @param restart Whether to delete an existing pool and start afresh.
#' @param ... Worker options, as AzureRMR passed to `parallel::makeCluster()`.
#'   `rscript_args` (extra arguments for Rscript) is honoured; other options
#'   are ignored with a warning.
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
#' @export
init_pool <- function(size = 10, restart = FALSE, ..., seed = NULL) {
  size <- check_size(size)
  if (!is.logical(restart) || length(restart) != 1L || is.na(restart))
    abort("init_pool(): `restart` must be TRUE or FALSE", "bgpool_bad_argument")
  seed <- seed_stream(seed, "init_pool()", "seed")
  options <- worker_options(...)
  if (restart || !pool_exists() || pool_size() < size) {
    delete_pool()
    message("Creating background pool")
    create_pool(size, options)
  } else {
    forget_exports()
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
  !is.null(.bgpool$pool)
}

#' @rdname init_pool
#' @export
pool_size <- function() {
  if (pool_exists()) .bgpool$size else 0L
}

check_size <- function(size) {
  ok <- is.numeric(size) && length(size) == 1L && !is.na(size) &&
    size >= 1 && size == round(size) && is.finite(size)
  if (!ok)
    abort(sprintf("init_pool(): `size` must be a whole number of workers, 1 or more, not %s",
                  deparse1(size)), "bgpool_bad_argument")
  as.integer(size)
}

worker_options <- function(...) {
  options <- list(...)
  unknown <- setdiff(names(options), "rscript_args")
  if (length(options) && (is.null(names(options)) || any(!nzchar(names(options)))))
    abort("init_pool(): worker options in `...` must be named, e.g. rscript_args = \"--vanilla\"",
          "bgpool_bad_argument")
  if (length(unknown))
    warning(sprintf("init_pool() ignores these options: %s", paste(unknown, collapse = ", ")),
            call. = FALSE)
  options
}

create_pool <- function(size, options) {
  remove_orphaned_dirs()
  args <- c("--default-packages=datasets,utils,grDevices,graphics,stats,methods",
            as.character(options$rscript_args), "-e", "bgpool:::template_main()")
  # Workers inherit the environment, not library paths set at run time.
  env <- paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep))
  handle <- tryCatch(
    pool_create(file.path(R.home("bin"), "Rscript"), args, env,
                getOption("bgpool.start_timeout", 60), tempdir(), size),
    error = function(e) abort(sprintf("init_pool(): could not start the workers: %s",
                                      conditionMessage(e)), "bgpool_start_failed"))
  .bgpool$pool <- handle
  .bgpool$size <- size
  forget_exports()
}

forget_exports <- function() {
  .bgpool$exports <- new.env(parent = emptyenv())
  .bgpool$segments <- new.env(parent = emptyenv())
}

# A master that was killed (SIGKILL, crash) cannot remove its pool's
# directory; its workers exit on their own. Such directories, found in
# other sessions' temporary directories, are removed here.
remove_orphaned_dirs <- function() {
  dirs <- Sys.glob(file.path(dirname(tempdir()), "Rtmp*", "bgpool-*-*"))
  dirs <- dirs[grepl("^bgpool-[0-9]+-", basename(dirs))]
  pids <- as.integer(sub("^bgpool-([0-9]+)-.*$", "\\1", basename(dirs)))
  mine <- file.info(dirs, extra_cols = TRUE)$uname %in% Sys.info()[["effective_user"]]
  orphaned <- dirs[mine & !is.na(pids) & pids != Sys.getpid() &
                     !file.exists(file.path("/proc", pids))]
  unlink(orphaned, recursive = TRUE)
}

stop_pool <- function() {
  handle <- .bgpool$pool
  close_cluster()
  rm(list = ls(.bgpool, all.names = TRUE), envir = .bgpool)
  pool_stop(handle)
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
  if (!is.null(.bgpool$cluster)) collect_cluster_replies(handle, wait = drain_cluster)
  replaced <- pool_prepare(handle, getOption("bgpool.cancel_grace", 1))
  if (length(replaced)) {
    on_workers(caller, worker_reset, list(getwd(), .libPaths()), replaced)
    exports <- as.list(.bgpool$exports, all.names = TRUE)
    if (length(exports))
      export_values(caller, exports, replaced)
  }
  # Workers see library paths the master added after the pool started.
  if (!identical(.libPaths(), .bgpool$lib_paths) && !cluster_busy()) {
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
#' include its last lines too.
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
  text <- vapply(pool_state(.bgpool$pool)$logs, function(path) {
    content <- if (file.exists(path)) readLines(path, warn = FALSE) else character()
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
  pool_state(.bgpool$pool)
}
