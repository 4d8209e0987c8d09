# Running work on the pool and turning what came of it into the answer.
#
# A backend's run_elements() (the native scheduler, src/scheduler.h, or
# psock_run_elements()) returns list(values, finished,
# failed, errors, warnings, losses, attempts):
#   values    a list in input order: the value of each finished element
#   finished  whether each element's task returned
#   failed    the indices whose task raised an error; `errors` their
#             conditions
#   warnings  list(position, condition) for each warning a task raised
#   losses    each worker lost (it died, its link broke, or it was stopped
#             at the time limit): list(worker, pid, how, timed_out, output,
#             tasks), `tasks` the elements it was running
#   attempts  NULL, or how many times each element was lost

run_elements <- function(caller, handle, job, inputs, is_map, n, chunk_size, labels,
                         retry, timeout, progress, seed) {
  retry <- check_retry(retry, caller)
  timeout <- check_timeout(timeout, caller)
  progress <- check_progress(progress, caller)
  job$seed <- seed_stream(seed, caller, ".seed")
  # a time limit applies to each task, so each task travels alone
  if (is.finite(timeout)) chunk_size <- 1
  outcome <- run_attempts(caller, handle, job, inputs, is_map, n, chunk_size, retry, timeout,
                          progress)
  call_outcome(caller, outcome, n, labels)
}

# Runs the elements; a lost worker's elements run again on the others, up
# to `retry` times each. When no worker is left, the lost ones are
# replaced (set up as the others) and the elements that may still run
# again do, at most `retry` more times. With `progress`, one progress bar
# follows it all; cli removes it when this function exits, so it is gone
# before any error about the outcome is shown.
run_attempts <- function(caller, handle, job, inputs, is_map, n, chunk_size, retry, timeout,
                         progress) {
  limit <- if (is.finite(timeout)) timeout else 0
  done_before <- 0  # elements done in earlier rounds
  update <- NULL
  if (progress && n > 0) {
    # cli:: rather than an import: workers never load cli, which starts them sooner
    bar <- cli::cli_progress_bar(
      name = caller, total = n, auto_terminate = FALSE,
      format = "{cli::pb_name}{cli::pb_bar} {cli::pb_current}/{cli::pb_total} | ETA: {cli::pb_eta}")
    update <- function(done) cli::cli_progress_update(set = done_before + done, id = bar)
  }
  run <- .bgpool$backend$run_elements
  outcome <- run(handle, job, inputs, is_map, n, chunk_size, limit, retry, NULL, update)
  for (round in seq_len(retry)) {
    redo <- which(!outcome$finished)
    redo <- redo[!redo %in% outcome$failed]
    if (!is.null(outcome$attempts)) redo <- redo[outcome$attempts[redo] <= retry]
    if (!length(redo)) break
    handle <- live_pool(caller)
    # seeded tasks run with the streams of their original positions
    job$index <- as.double(redo)
    done_before <- sum(outcome$finished) + length(outcome$failed)
    again <- run(handle, job, take_elements(inputs, redo, is_map), is_map, length(redo),
                 chunk_size, limit, retry, outcome$attempts[redo], update)
    outcome <- merge_outcomes(outcome, again, redo)
  }
  outcome
}

on_workers <- function(caller, fun, args, slots) {
  outcome <- .bgpool$backend$run_on_workers(.bgpool$pool, fun, args, slots)
  call_outcome(caller, outcome, length(slots), labels = NULL, unit = "worker")
}

# The one place where what came of a call becomes its answer: every
# element's value when every element finished; otherwise an error of class
# bgpool_error whose fields account for each element exactly once:
# `finished` (their values are in `results`, NULL elsewhere), `failed`
# (their tasks' conditions in `errors`) and `unfinished` (lost with its
# worker, or never run). Tasks' warnings are signalled first.
call_outcome <- function(caller, outcome, n, labels, unit = "element") {
  if (!length(outcome$warnings) && !length(outcome$failed) && all(outcome$finished))
    return(outcome$values)
  resignal_warnings(outcome$warnings)
  in_order <- order(outcome$failed)
  failed <- outcome$failed[in_order]
  errors <- outcome$errors[in_order]
  finished <- which(outcome$finished)
  unfinished <- setdiff(seq_len(n), c(finished, failed))
  if (anyDuplicated(c(finished, failed)))
    stop(bgpool_error(sprintf("%s: internal error: an element was both finished and failed; please report this",
                              caller), "bgpool_internal_error"))
  accounts <- list(results = outcome$values, finished = finished, failed = failed,
                   errors = errors, unfinished = unfinished, losses = outcome$losses)
  if (length(unfinished))
    stop(worker_lost_error(caller, accounts, n, labels, unit))
  if (length(failed))
    stop(task_error(caller, accounts, n, labels, unit))
  outcome$values
}

# The elements at `index` of the inputs (recycled, for map).
take_elements <- function(inputs, index, is_map) {
  if (!is_map) return(inputs[index])
  lapply(inputs, function(x) x[(index - 1L) %% length(x) + 1L])
}

# `again` ran the elements at `index` of `first`.
merge_outcomes <- function(first, again, index) {
  first$values[index] <- again$values
  first$finished[index] <- again$finished
  first$failed <- c(first$failed, index[again$failed])
  first$errors <- c(first$errors, again$errors)
  first$warnings <- c(first$warnings, lapply(again$warnings, function(w) {
    w[[1L]] <- index[w[[1L]]]
    w
  }))
  first$losses <- c(first$losses, lapply(again$losses, function(lost) {
    lost$tasks <- index[lost$tasks]
    lost
  }))
  if (!is.null(again$attempts)) {
    if (is.null(first$attempts)) first$attempts <- integer(length(first$finished))
    first$attempts[index] <- again$attempts
  }
  first
}

# A function, or the name of one to be found on the workers, as
# parLapply(), clusterMap() and clusterCall() find it.
function_or_name <- function(fun, arg, caller) {
  if (is.function(fun) || (is.character(fun) && length(fun) == 1L && !is.na(fun) && nzchar(fun)))
    return(fun)
  abort(sprintf("%s: `%s` must be a function or the name of one, not %s",
                caller, arg, class(fun)[1L]), "bgpool_bad_argument")
}

# match.fun() with an error that says what to pass instead: the function
# is found in the master, as parSapply() finds it. `env` is where the
# user's call was made.
match_function <- function(fun, arg, caller, env) {
  fun <- function_or_name(fun, arg, caller)
  if (is.function(fun)) return(fun)
  found <- get0(fun, envir = env, mode = "function")
  if (!is.null(found)) return(found)
  abort(sprintf("%s: `%s` must be a function or the name of one; no function named \"%s\" was found",
                caller, arg, fun), "bgpool_bad_argument")
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
  if (!is.numeric(retry) || length(retry) != 1L || !is.finite(retry) || retry < 0 ||
        retry > 1000)
    abort(sprintf("%s: `.retry` must be a whole number from 0 to 1000 (how many times a lost element may run again), not %s",
                  caller, deparse1(retry, nlines = 1L)), "bgpool_bad_argument")
  as.integer(floor(retry))
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
