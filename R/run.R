# Running work on the pool and turning the outcome into results or errors.
#
# The native scheduler returns list(values, done, failed, errors, warnings,
# lost): `values` in input order; `done` whether each element ran (finished
# or failed); `failed` the indices whose task raised an error, with the
# worker's `errors` (message and class); the tasks' `warnings` (position,
# message, class); `lost`, when a worker died, its link broke or its task
# ran past the time limit: which worker, how it ended, its last output and
# the elements it was running.

run_elements <- function(caller, handle, job, inputs, is_map, n, chunk_size, labels,
                         retry, timeout, progress, seed) {
  retry <- check_retry(retry, caller)
  timeout <- check_timeout(timeout, caller)
  progress <- check_progress(progress, caller)
  job$seed <- seed_stream(seed, caller, ".seed")
  # a time limit applies to each task, so each task travels alone
  if (is.finite(timeout)) chunk_size <- 1
  result <- run_attempts(caller, handle, job, inputs, is_map, n, chunk_size, retry, timeout,
                         progress)
  check_result(caller, result, n, labels)
}

# Runs the elements, then re-runs on fresh workers what a lost worker did
# not finish (not a task that ran past its time limit: it would again),
# `retry` times at most. With `progress`, one progress bar follows all
# attempts; cli removes it when this function exits, so it is gone before
# any error about the outcome is shown.
run_attempts <- function(caller, handle, job, inputs, is_map, n, chunk_size, retry, timeout,
                         progress) {
  limit <- if (is.finite(timeout)) timeout else 0
  done_before <- 0  # elements done by earlier attempts
  update <- NULL
  if (progress && n > 0) {
    # cli:: rather than an import: workers never load cli, which starts them sooner
    bar <- cli::cli_progress_bar(
      name = caller, total = n, auto_terminate = FALSE,
      format = "{cli::pb_name}{cli::pb_bar} {cli::pb_current}/{cli::pb_total} | ETA: {cli::pb_eta}")
    update <- function(done) cli::cli_progress_update(set = done_before + done, id = bar)
  }
  result <- pool_run_elements(handle, job, inputs, is_map, n, chunk_size, limit, update)
  while (!is.null(result$lost) && retry > 0) {
    redo <- which(!result$done)
    if (isTRUE(result$lost$timed_out)) redo <- setdiff(redo, result$lost$tasks[1L])
    if (!length(redo)) break
    retry <- retry - 1
    handle <- live_pool(caller)
    # seeded tasks run with the streams of their original positions
    job$index <- as.double(redo)
    done_before <- sum(result$done)
    again <- pool_run_elements(handle, job, take_elements(inputs, redo, is_map), is_map,
                               length(redo), chunk_size, limit, update)
    result <- merge_results(result, again, redo)
  }
  result
}

on_workers <- function(caller, fun, args, slots, fds = integer()) {
  result <- pool_run_on_workers(.bgpool$pool, fun, args, slots, fds)
  check_result(caller, result, length(slots), labels = NULL, unit = "worker")
}

check_result <- function(caller, result, n, labels, unit = "element") {
  if (is.null(result$lost) && !length(result$failed) && !length(result$warnings))
    return(result$values)
  # failures arrive as workers finish; report them in input order
  if (length(result$failed) > 1L) {
    in_order <- order(result$failed)
    result$failed <- result$failed[in_order]
    result$errors <- result$errors[in_order]
  }
  resignal_warnings(result$warnings)
  if (!is.null(result$lost))
    stop(worker_lost_error(caller, result, n, labels))
  if (length(result$failed))
    stop(task_error(caller, result, n, labels, unit))
  result$values
}

# The elements at `index` of the inputs (recycled, for map).
take_elements <- function(inputs, index, is_map) {
  if (!is_map) return(inputs[index])
  lapply(inputs, function(x) x[(index - 1L) %% length(x) + 1L])
}

# `again` ran the elements at `index` of the first attempt.
merge_results <- function(first, again, index) {
  first$values[index] <- again$values
  first$done[index] <- again$done
  first$failed <- c(first$failed, index[again$failed])
  first$errors <- c(first$errors, again$errors)
  first$warnings <- c(first$warnings, lapply(again$warnings, function(w) {
    w$position <- index[w$position]
    w
  }))
  first$lost <- if (!is.null(again$lost)) {
    again$lost$tasks <- index[again$lost$tasks]
    again$lost
  }
  first
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

check_retry <- function(retry, caller) {
  if (!is.numeric(retry) || length(retry) != 1L || is.na(retry) || retry < 0)
    abort(sprintf("%s: `.retry` must be a whole number, 0 or more", caller), "bgpool_bad_argument")
  floor(retry)
}

# Whether to show a progress bar: NULL decides (in interactive sessions,
# but not while knitting), TRUE and FALSE force it.
check_progress <- function(progress, caller) {
  if (is.null(progress))
    return(interactive() && !isTRUE(getOption("knitr.in.progress")))
  if (!is.logical(progress) || length(progress) != 1L || is.na(progress))
    abort(sprintf("%s: `.progress` must be NULL (a progress bar in interactive sessions), TRUE or FALSE", caller),
          "bgpool_bad_argument")
  progress
}

check_timeout <- function(timeout, caller) {
  if (!is.numeric(timeout) || length(timeout) != 1L || is.na(timeout) || timeout <= 0)
    abort(sprintf("%s: `.timeout` must be a number of seconds greater than 0 (Inf for none)", caller),
          "bgpool_bad_argument")
  timeout
}
