# Calls on every worker: pool_call, pool_evalq, pool_export.

#' Run code on every worker of the background pool
#'
#' `pool_call()` calls a function with the same arguments on every worker
#' and returns a list with one result per worker, like
#' [parallel::clusterCall()]. `pool_evalq()` evaluates an expression in each
#' worker's global environment, like [parallel::clusterEvalQ()].
#' `pool_export()` assigns variables of the master in each worker's global
#' environment, like [parallel::clusterExport()]; a worker that replaces one
#' that died receives them too.
#'
#' @param fun A function, or the name of one.
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
  fun <- match_function(fun, "fun", caller, parent.frame())
  on_workers(caller, fun, list(...), seq_len(pool_size()))
}

#' @rdname pool_call
#' @export
pool_evalq <- function(expr) {
  caller <- "pool_evalq()"
  live_pool(caller)
  on_workers(caller, eval, list(substitute(expr), envir = .GlobalEnv), seq_len(pool_size()))
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
  values <- mget(varlist, envir = envir, inherits = TRUE)
  export_values(caller, values, seq_len(pool_size()))
  list2env(values, envir = .bgpool$exports)
  invisible(NULL)
}

# Assigns `values` in the global environments of the workers in `slots`.
# Large vectors travel once, into a shared memory segment that every worker
# maps copy-on-write; exporting the same unchanged vector again reuses its
# segment. Everything else is serialized to each worker.
export_values <- function(caller, values, slots) {
  threshold <- getOption("bgpool.share_threshold", 1e6)
  segments <- list()
  for (name in names(values)) {
    value <- values[[name]]
    if (shareable_bytes(value) >= threshold) {
      segment <- segment_for(name, value)
      if (!is.null(segment)) segments[[name]] <- segment
    }
  }
  shared <- lapply(names(segments), function(name) {
    value <- values[[name]]
    list(type = typeof(value), length = length(value), attributes = attributes(value))
  })
  names(shared) <- names(segments)
  on_workers(caller, worker_assign, list(values[setdiff(names(values), names(segments))], shared),
             slots, vapply(segments, segment_fd, 0L, USE.NAMES = FALSE))
}

# The segment holding `value` as exported under `name`: the one made last
# time if the vector has not changed since, otherwise a new one. NULL when
# no segment can be made (values are then streamed).
segment_for <- function(name, value) {
  hash <- vector_hash(value)
  cached <- .bgpool$segments[[name]]
  if (!is.null(cached) && identical(cached$hash, hash) && identical(cached$type, typeof(value)))
    return(cached$segment)
  segment <- tryCatch(shared_segment(value), error = function(e) NULL)
  .bgpool$segments[[name]] <- if (!is.null(segment))
    list(hash = hash, type = typeof(value), segment = segment)
  segment
}
