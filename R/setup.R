# The workers' set-up, recorded so that a worker that replaces one that
# died starts like the others: what pool_export() assigned (each name's
# value as it was when exported), and the pool_call() and pool_evalq()
# calls that succeeded on every worker, in the order they were made.
#
# The log is a list of steps, each a request for run_on_workers():
# list(kind, fun, args). An export step (kind "export") holds one entry per
# name: a serialized snapshot of its value, or a shared copy
# (src/shared.h) of a large vector, which travels by reference. A call step
# (kind "call") holds the function and arguments as they were: the objects
# themselves, which R never changes in place, or a serialized snapshot
# when they hold environments, which can change. When a name is exported
# again, its older entry leaves the log unless a call step came after it
# (that call may have used it, and is replayed as it ran); an export step
# left empty is dropped.
#
# The log is kept in an environment, `.bgpool$log`, one binding a step
# ("1", "2", ...), so that adding a step costs the same however long the
# log is. It holds at most getOption("bgpool.max_setup_steps", 10000)
# steps: past that, nothing more is recorded, and a worker that would need
# replaying it is refused (worker_replaced_error()), rather than set up
# differently.
#
# Shared copies: `.bgpool$segments` holds, per exported name, the shared
# copy of its current value (with the value's hash, so that exporting it
# again unchanged sends no new copy). A shared copy that neither holds a
# current value nor is in the log is released at once (its memory goes as
# soon as no worker maps it).

forget_setup <- function() {
  for (shared in held_segments()) release_segment(shared)
  .bgpool$log <- new.env(parent = emptyenv())
  .bgpool$steps <- 0L
  .bgpool$log_full <- FALSE
  .bgpool$segments <- new.env(parent = emptyenv())
}

setup_steps <- function() {
  if (is.null(.bgpool$steps)) return(list())  # no pool yet
  mget(as.character(seq_len(.bgpool$steps)), envir = .bgpool$log)
}

add_step <- function(step) {
  if (.bgpool$steps >= getOption("bgpool.max_setup_steps", 10000)) {
    .bgpool$log_full <- TRUE
    return(invisible())
  }
  .bgpool$steps <- .bgpool$steps + 1L
  assign(as.character(.bgpool$steps), step, envir = .bgpool$log)
}

# Replaces the log by `steps`.
set_steps <- function(steps) {
  .bgpool$log <- list2env(stats::setNames(steps, as.character(seq_along(steps))),
                          parent = emptyenv())
  .bgpool$steps <- length(steps)
}

# The step that assigns `values` on the workers. Large vectors go as shared
# copies (new ones in `fresh`: not yet recorded); everything else as a
# serialized snapshot.
export_step <- function(values) {
  sharing <- .bgpool$backend$shares_memory
  threshold <- getOption("bgpool.share_threshold", 1e6)
  entries <- list()
  fresh <- list()
  for (name in names(values)) {
    value <- values[[name]]
    bytes <- if (sharing) shareable_bytes(value) else 0
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
  list(kind = "export", fun = worker_assign, args = list(entries), fresh = fresh)
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
  steps <- setup_steps()
  is_call <- vapply(steps, function(old) old$kind == "call", NA)
  calls_after <- rev(cumsum(rev(is_call))) - is_call
  set_steps(Filter(Negate(is.null), Map(function(old, later_calls) {
    if (old$kind == "call" || later_calls > 0) return(old)
    old$args[[1L]] <- old$args[[1L]][setdiff(names(old$args[[1L]]), exported)]
    if (length(old$args[[1L]])) old
  }, steps, calls_after)))
  for (name in exported) {
    now <- step$fresh[[name]]
    if (!is.null(now)) .bgpool$segments[[name]] <- now
    else if (is.null(step$args[[1L]][[name]]$shared) && !is.null(.bgpool$segments[[name]]))
      rm(list = name, envir = .bgpool$segments)
  }
  step$fresh <- NULL
  add_step(step)
  kept <- vapply(held_segments(), shared_id, 0L)
  for (shared in before)
    if (!shared_id(shared) %in% kept) release_segment(shared)
}

# The shared copies the pool holds, each once: those of current values,
# and those the log keeps for replay.
held_segments <- function() {
  current <- unname(lapply(as.list(.bgpool$segments), `[[`, "shared"))
  logged <- lapply(setup_steps(), function(step)
    if (step$kind == "call") list() else unname(lapply(step$args[[1L]], `[[`, "shared")))
  all <- Filter(Negate(is.null), c(current, unlist(logged, recursive = FALSE)))
  all[!duplicated(vapply(all, shared_id, 0L))]
}

# Releases the new shared copies of an export that failed.
discard_export <- function(step) {
  for (fresh in step$fresh) release_segment(fresh$shared)
}

# Records a pool_call() or pool_evalq() as it was made.
record_call <- function(fun, args) {
  add_step(if (holds_environments(list(fun, args)))
    list(kind = "call", fun = worker_replay,
         args = list(serialize(list(fun = fun, args = args), NULL, xdr = FALSE)))
  else list(kind = "call", fun = fun, args = args))
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
    if (.bgpool$log_full)
      abort(sprintf("more than %s steps of set-up (exports, pool_call() and pool_evalq() calls) were made since init_pool(), too many to replay (options(bgpool.max_setup_steps))",
                    format(getOption("bgpool.max_setup_steps", 10000))))
    on_workers(caller, worker_reset, list(getwd(), .libPaths()), slots)
    for (step in setup_steps()) run_step(caller, step, slots)
  }, bgpool_error = function(e) {
    .bgpool$backend$kill(.bgpool$pool, slots)
    stop(worker_replaced_error(caller, slots, e))
  })
  invisible(NULL)
}
