# Running work on the pool and turning the outcome into results or errors.
#
# The native scheduler returns list(values, done, failed, errors, lost):
# `values` in input order; `done` whether each element ran (finished or
# failed); `failed` the indices whose task raised an error, with the
# worker's `errors` (message and class); `lost`, when a worker died or its
# link broke: which worker, how it ended, its last output and the elements
# it was running.

run_elements <- function(caller, handle, job, inputs, is_map, n, chunk_size, labels) {
  result <- pool_run_elements(handle, job, inputs, is_map, n, chunk_size)
  check_result(caller, result, n, labels)
}

on_workers <- function(caller, fun, args, slots) {
  result <- pool_run_on_workers(.bgpool$pool, fun, args, slots)
  check_result(caller, result, length(slots), labels = NULL, unit = "worker")
}

check_result <- function(caller, result, n, labels, unit = "element") {
  # failures arrive as workers finish; report them in input order
  in_order <- order(result$failed)
  result$failed <- result$failed[in_order]
  result$errors <- result$errors[in_order]
  if (!is.null(result$lost))
    stop(worker_died_error(caller, result, n, labels))
  if (length(result$failed))
    stop(task_error(caller, result, n, labels, unit))
  result$values
}

# match.fun() with an error that says what to pass instead.
# `env` is where the user's call was made.
match_function <- function(fun, arg, caller, env) {
  if (is.function(fun)) return(fun)
  if (is.character(fun) && length(fun) == 1L && !is.na(fun)) {
    found <- get0(fun, envir = env, mode = "function")
    if (!is.null(found)) return(found)
    abort(sprintf("%s: `%s` must be a function or the name of one; no function named \"%s\" was found",
                  caller, arg, fun), "bgpool_bad_argument")
  }
  abort(sprintf("%s: `%s` must be a function or the name of one, not %s",
                caller, arg, class(fun)[1L]), "bgpool_bad_argument")
}

check_chunk_size <- function(chunk.size, caller) {
  if (is.null(chunk.size)) return(0)
  if (!is.numeric(chunk.size) || length(chunk.size) != 1L || is.na(chunk.size) || chunk.size < 0)
    abort(sprintf("%s: `chunk.size` must be NULL or a single positive number", caller),
          "bgpool_bad_argument")
  # as in parallel: 0 means the default
  ceiling(chunk.size)
}
