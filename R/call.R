# Calls on every worker: pool_call, pool_evalq, pool_export.

#' Run code on every worker of the background pool
#'
#' `pool_call()` calls a function with the same arguments on every worker
#' and returns a list with one result per worker, like
#' [parallel::clusterCall()]. `pool_evalq()` evaluates an expression in each
#' worker's global environment, like [parallel::clusterEvalQ()].
#' `pool_export()` assigns variables of the master in each worker's global
#' environment, like [parallel::clusterExport()].
#'
#' These set the workers up, and bgpool records what they did: a worker
#' that replaces one that died (see `.retry` in [pool_lapply()]) is given,
#' in order, every export (each name's value as it was when exported) and
#' every `pool_call()` and `pool_evalq()` that succeeded on all workers
#' since [init_pool()], so that it starts like the others (with the same
#' packages attached, options set, variables defined). If that replay
#' fails, the call that needed the worker fails with an error of class
#' `bgpool_setup_failed`, and no task runs on a worker set up differently.
#' State that tasks leave behind, or that calls through [pool_cluster()]
#' set up, is not replayed.
#'
#' @param fun A function, or the name of one (found on the workers, as
#'   [parallel::clusterCall()] finds it).
#' @param ... Arguments to `fun`.
#' @param expr An expression, not evaluated in the master.
#' @param varlist Names of the variables to export.
#' @param envir The environment to find them in (with its enclosures).
#' @return `pool_call()` and `pool_evalq()`: an unnamed list, one element per
#'   worker. `pool_export()`: `NULL`, invisibly.
#' @examples
#' init_pool(2)
#' pool_call(function(a, b) a + b, 1, 2)
#' pool_evalq({ library(stats); Sys.getpid() })
#' f <- function() {
#'   threshold <- 0.5
#'   pool_export("threshold", envir = environment())
#' }
#' f()
#' pool_evalq(threshold)
#' delete_pool()
#' @export
pool_call <- function(fun, ...) {
  caller <- "pool_call()"
  live_pool(caller)
  set_up_workers(caller, function_or_name(fun, "fun", caller), list(...))
}

#' @rdname pool_call
#' @export
pool_evalq <- function(expr) {
  caller <- "pool_evalq()"
  live_pool(caller)
  set_up_workers(caller, eval, list(substitute(expr), envir = .GlobalEnv))
}

#' @rdname pool_call
#' @export
pool_export <- function(varlist, envir = .GlobalEnv) {
  caller <- "pool_export()"
  live_pool(caller)
  if (!is.character(varlist) || anyNA(varlist))
    abort("pool_export(): `varlist` must be a character vector of variable names",
          "bgpool_bad_argument")
  if (!is.environment(envir))
    abort("pool_export(): `envir` must be an environment, e.g. environment()",
          "bgpool_bad_argument")
  found <- vapply(varlist, exists, NA, envir = envir)
  if (!all(found))
    abort(sprintf("pool_export(): no variable named %s was found in `envir` or its enclosures; nothing was exported. Create it first, or pass the environment that holds it as `envir`.",
                  paste0("\"", varlist[!found], "\"", collapse = ", ")),
          "bgpool_bad_argument")
  values <- mget(unique(varlist), envir = envir, inherits = TRUE)
  # a message carries at most so many descriptors (shared segments)
  for (batch in split(names(values), ceiling(seq_along(values) / 250L))) {
    step <- export_step(values[batch])
    tryCatch(run_step(caller, step, seq_len(pool_size())),
             error = function(e) {
               discard_export(step)
               stop(e)
             })
    record_export(step)
  }
  invisible(NULL)
}

# Runs fun(...) on every worker and records it when all succeeded.
set_up_workers <- function(caller, fun, args) {
  values <- on_workers(caller, fun, args, seq_len(pool_size()))
  record_call(fun, args)
  values
}
