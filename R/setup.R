# The workers' set-up, recorded so that a worker that replaces one that
# died starts like the others: what pool_export() assigned (each name's
# value as it was when exported), and the pool_call() and pool_evalq()
# calls that succeeded on every worker, in the order they were made.
#
# `.bgpool$setup` is a list of steps, each a request for run_on_workers():
# list(fun, args). An export step holds one entry per name: a serialized
# snapshot of its value, or a shared copy (src/shared.h) of a large vector,
# which travels by reference. When a name is exported again, its older
# entry leaves the log unless a recorded call came after it (that call may
# have used it, and is replayed as it ran); a step left empty is dropped.
#
# Shared copies: `.bgpool$segments` holds, per exported name, the shared
# copy of its current value (with the value's hash, so that exporting it
# again unchanged sends no new copy). A shared copy that neither holds a
# current value nor is in the log is released at once (its memory goes as
# soon as no worker maps it).

forget_setup <- function() {
  for (shared in held_segments()) release_segment(shared)
  .bgpool$setup <- list()
  .bgpool$segments <- new.env(parent = emptyenv())
}

# The step that assigns `values` on the workers. Large vectors go as shared
# copies (new ones in `fresh`: not yet recorded); everything else as a
# serialized snapshot.
export_step <- function(values) {
  threshold <- getOption("bgpool.share_threshold", 1e6)
  entries <- list()
  fresh <- list()
  for (name in names(values)) {
    value <- values[[name]]
    bytes <- shareable_bytes(value)
    shared <- NULL
    if (bytes > 0 && bytes >= threshold) {
      shared <- reuse_segment(name, value)
      if (is.null(shared)) {
        shared <- tryCatch(shared_copy(value), error = function(e) NULL)
        if (!is.null(shared))
          fresh[[name]] <- list(hash = vector_hash(value), type = typeof(value), shared = shared)
      }
    }
    entries[[name]] <- if (is.null(shared))
      list(name = name, snapshot = serialize(value, NULL, xdr = FALSE))
    else list(name = name, shared = shared)
  }
  list(fun = worker_assign, args = list(entries), fresh = fresh)
}

# The shared copy of `value` as last exported under `name`, if unchanged.
reuse_segment <- function(name, value) {
  cached <- .bgpool$segments[[name]]
  if (!is.null(cached) && identical(cached$type, typeof(value)) &&
        identical(cached$hash, vector_hash(value)))
    cached$shared
}

# Records an export that every worker took, and releases the shared copies
# it made unneeded.
record_export <- function(step) {
  exported <- names(step$args[[1L]])
  before <- held_segments()
  is_call <- vapply(.bgpool$setup, is_call_step, NA)
  calls_after <- rev(cumsum(rev(is_call))) - is_call
  .bgpool$setup <- Filter(Negate(is.null), Map(function(old, later_calls) {
    if (is_call_step(old) || later_calls > 0) return(old)
    old$args[[1L]] <- old$args[[1L]][setdiff(names(old$args[[1L]]), exported)]
    if (length(old$args[[1L]])) old
  }, .bgpool$setup, calls_after))
  for (name in exported) {
    now <- step$fresh[[name]]
    if (!is.null(now)) .bgpool$segments[[name]] <- now
    else if (is.null(step$args[[1L]][[name]]$shared) && !is.null(.bgpool$segments[[name]]))
      rm(list = name, envir = .bgpool$segments)
  }
  step$fresh <- NULL
  .bgpool$setup[[length(.bgpool$setup) + 1L]] <- step
  kept <- vapply(held_segments(), shared_id, 0L)
  for (shared in before)
    if (!shared_id(shared) %in% kept) release_segment(shared)
}

is_call_step <- function(step) identical(step$fun, worker_replay)

# The shared copies the pool holds, each once: those of current values,
# and those the log keeps for replay.
held_segments <- function() {
  current <- unname(lapply(as.list(.bgpool$segments), `[[`, "shared"))
  logged <- lapply(.bgpool$setup, function(step)
    if (is_call_step(step)) list() else unname(lapply(step$args[[1L]], `[[`, "shared")))
  all <- Filter(Negate(is.null), c(current, unlist(logged, recursive = FALSE)))
  all[!duplicated(vapply(all, shared_id, 0L))]
}

# Releases the new shared copies of an export that failed.
discard_export <- function(step) {
  for (fresh in step$fresh) release_segment(fresh$shared)
}

# Records a pool_call() or pool_evalq() as it was made (a snapshot of the
# function and its arguments, as environments change after).
record_call <- function(fun, args) {
  snapshot <- serialize(list(fun = fun, args = args), NULL, xdr = FALSE)
  .bgpool$setup[[length(.bgpool$setup) + 1L]] <- list(fun = worker_replay, args = list(snapshot))
}

# Runs a step on the workers in `slots`.
run_step <- function(caller, step, slots) {
  on_workers(caller, step$fun, step$args, slots)
}

# Sets up workers that replace dead ones as the others were: the master's
# working directory and library paths, then the recorded steps in order.
# Workers whose set-up fails are stopped, so that none with a different
# state ever runs a task; the next call tries again.
replay_setup <- function(caller, slots) {
  tryCatch({
    on_workers(caller, worker_reset, list(getwd(), .libPaths()), slots)
    for (step in .bgpool$setup) run_step(caller, step, slots)
  }, bgpool_error = function(e) {
    pool_kill_workers(.bgpool$pool, slots)
    stop(worker_replaced_error(caller, slots, e))
  })
  invisible(NULL)
}
