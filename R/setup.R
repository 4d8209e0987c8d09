# The workers' set-up, recorded so that a worker that replaces one that
# died starts like the others: what pool_export() assigned (each name's
# value as it was when exported), and the pool_call() and pool_evalq()
# calls that succeeded on every worker, in the order they were made.
#
# `.bgpool$setup` is a list of steps, each a request for run_on_workers():
# list(fun, args, segments), `segments` being the shared segments whose
# descriptors go with it. An export step holds one entry per name. When a
# name is exported again, its older entry leaves the log unless a recorded
# call came after it (that call may have used it, and is replayed as it
# ran); a step left empty is dropped.
#
# Shared segments: `.bgpool$segments` holds, per exported name, the segment
# of its current value (with the value's hash, so that exporting it again
# unchanged sends no new copy). A segment that neither holds a current
# value nor is in the log is released at once (its descriptor closed; its
# memory goes when no worker maps it).

forget_setup <- function() {
  for (segment in held_segments()) release_segment(segment)
  .bgpool$setup <- list()
  .bgpool$segments <- new.env(parent = emptyenv())
}

# The step that assigns `values` on the workers. Large vectors go as shared
# segments (new ones in `fresh`: not yet recorded); everything else as a
# serialized snapshot.
export_step <- function(values) {
  threshold <- getOption("bgpool.share_threshold", 1e6)
  entries <- list()
  segments <- list()
  fresh <- list()
  for (name in names(values)) {
    value <- values[[name]]
    segment <- NULL
    bytes <- shareable_bytes(value)
    if (bytes > 0 && bytes >= threshold) {
      segment <- reuse_segment(name, value)
      if (is.null(segment)) {
        segment <- tryCatch(shared_segment(value), error = function(e) NULL)
        if (!is.null(segment))
          fresh[[name]] <- list(hash = vector_hash(value), type = typeof(value), segment = segment)
      }
    }
    if (is.null(segment)) {
      entries[[name]] <- list(name = name, value = serialize(value, NULL, xdr = FALSE))
    } else {
      segments[[length(segments) + 1L]] <- segment
      entries[[name]] <- list(name = name, segment = list(
        descriptor = length(segments), type = typeof(value), length = length(value),
        attributes = attributes(value)))
    }
  }
  list(fun = worker_assign, args = list(entries), segments = segments, fresh = fresh)
}

# The segment holding `value` as last exported under `name`, if unchanged.
reuse_segment <- function(name, value) {
  cached <- .bgpool$segments[[name]]
  if (!is.null(cached) && identical(cached$type, typeof(value)) &&
        identical(cached$hash, vector_hash(value)))
    cached$segment
}

# Records an export that every worker took, and releases the segments it
# made unneeded.
record_export <- function(step) {
  exported <- names(step$args[[1L]])
  before <- held_segments()
  is_call <- vapply(.bgpool$setup, is_call_step, NA)
  calls_after <- rev(cumsum(rev(is_call))) - is_call
  .bgpool$setup <- Filter(Negate(is.null), Map(function(old, later_calls) {
    if (is_call_step(old) || later_calls > 0) old else without_names(old, exported)
  }, .bgpool$setup, calls_after))
  for (name in exported) {
    now <- step$fresh[[name]]
    if (!is.null(now)) .bgpool$segments[[name]] <- now
    else if (is.null(step$args[[1L]][[name]]$segment) && !is.null(.bgpool$segments[[name]]))
      rm(list = name, envir = .bgpool$segments)
  }
  step$fresh <- NULL
  .bgpool$setup[[length(.bgpool$setup) + 1L]] <- step
  kept <- vapply(held_segments(), segment_fd, 0L)
  for (segment in before)
    if (!segment_fd(segment) %in% kept) release_segment(segment)
}

# An export step without the entries of `names` (its segments renumbered
# as the message will carry them); NULL when no entry is left.
without_names <- function(step, names) {
  entries <- step$args[[1L]]
  entries <- entries[setdiff(names(entries), names)]
  if (!length(entries)) return(NULL)
  used <- integer()
  for (name in names(entries)) {
    if (is.null(entries[[name]]$segment)) next
    used <- c(used, entries[[name]]$segment$descriptor)
    entries[[name]]$segment$descriptor <- length(used)
  }
  step$segments <- step$segments[used]
  step$args[[1L]] <- entries
  step
}

is_call_step <- function(step) identical(step$fun, worker_replay)

# The segments the pool holds, each once: those of current values, and
# those the log keeps for replay.
held_segments <- function() {
  current <- unname(lapply(as.list(.bgpool$segments), `[[`, "segment"))
  logged <- unlist(lapply(.bgpool$setup, `[[`, "segments"), recursive = FALSE)
  all <- c(current, logged)
  all[!duplicated(vapply(all, segment_fd, 0L))]
}

# Releases the new segments of an export that failed.
discard_export <- function(step) {
  for (fresh in step$fresh) release_segment(fresh$segment)
}

# Records a pool_call() or pool_evalq() as it was made (a snapshot of the
# function and its arguments, as environments change after).
record_call <- function(fun, args) {
  snapshot <- serialize(list(fun = fun, args = args), NULL, xdr = FALSE)
  .bgpool$setup[[length(.bgpool$setup) + 1L]] <- list(fun = worker_replay, args = list(snapshot))
}

# Runs a step on the workers in `slots`.
run_step <- function(caller, step, slots) {
  on_workers(caller, step$fun, step$args, slots,
             vapply(step$segments, segment_fd, 0L, USE.NAMES = FALSE))
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
