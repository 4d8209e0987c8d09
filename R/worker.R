# The template process, started by the master as
# `Rscript -e 'bgpool:::template_main()'`, forks a worker per request (see
# src/pool.h). A worker connects back over the pool's private socket, then
# answers requests (R/protocol.R) until the master goes away: a chunk of
# elements to apply the call's job to, or one call. A task's warnings
# travel back to be signalled in the master; its other output goes to the
# worker's log (pool_output()).

template_main <- function() {
  # An R process removes its temporary directory when it ends, also one
  # forked from the template, which would share the template's. So the
  # template gives its own up, and each worker makes one of its own, in the
  # pool's directory, which goes with the pool.
  unlink(tempdir(), recursive = TRUE)
  .bgpool$native_worker <- TRUE
  .bgpool$remote_host <- nzchar(Sys.getenv("BGPOOL_REMOTE"))
  slot <- template_serve()
  if (slot > 0) {
    worker_connect(slot)
    tempdir(check = TRUE)
    worker_main()
  }
  invisible(NULL)
}

# Error, warning and interrupt handlers are set up once around a loop over
# many requests (worker_serve(), src/worker.cpp), not once per request:
# they cost more than a small task. After a task's error the loop is
# entered afresh.
worker_main <- function() {
  state <- new.env(parent = emptyenv())
  state$job <- NULL
  repeat {
    finished <- withRestarts(
      tryCatch(
        withCallingHandlers(worker_serve(state),
                            warning = function(w) keep_warning(state, w),
                            interrupt = function(i) if (worker_cancel_requested()) invokeRestart("bgpool_cancel")),
        error = function(e) reply_failure(state, e)),
      bgpool_cancel = function() reply_failure(state, cancelled()))
    if (finished) break
  }
  invisible(NULL)
}

# The job of a call, for worker_run_elements(). A function given by name is
# found here, on the worker, as parLapply() and clusterMap() find it; one
# that is not found fails each element with the error that says so.
prepare_job <- function(job, call) {
  if (is.character(job$fun)) {
    # from the frame tasks run in: base first, then the global environment
    job$fun <- tryCatch(get(job$fun, envir = .BaseNamespaceEnv, mode = "function"),
                        error = function(e) function(...) stop(e))
  }
  job$call <- call
  job
}

run_chunk <- function(job, request) {
  # the job comes with a call's first chunk to each worker
  if (!identical(job$call, request[[REQUEST_CALL]]))
    stop("bgpool: this worker did not receive the call's function; this is a bug in bgpool")
  run_elements_here(job, request[[REQUEST_DATA]], request[[REQUEST_START]])
}

# Runs elements of a call here (src/tasks.h). Seeded tasks use their own
# streams; the worker's own comes back after.
run_elements_here <- function(job, inputs, start) {
  if (!is.null(job$seed)) {
    saved <- rng_state()
    on.exit(restore_rng(saved))
  }
  worker_run_elements(job, inputs, start)
}

# A task's warning travels back to be signalled in the master, as R would
# have shown it: not when R would ignore it (options(warn) below 0) or turn
# it into an error (2 or more), nor when nobody could muffle it (a warning
# given to signalCondition() is shown by nobody).
keep_warning <- function(state, w, position = worker_position()) {
  warn <- getOption("warn", 0)
  if (!is.numeric(warn) || warn < 0 || warn >= 2 || is.null(findRestart("muffleWarning")))
    return()
  state$warnings[[length(state$warnings) + 1L]] <- signal(position, sendable(w))
  invokeRestart("muffleWarning")
}

# Replies to the request whose task failed, with the values of the
# elements before it. Returns whether the worker is done (the master has
# gone, or the failure was not a task's).
reply_failure <- function(state, condition) {
  if (is.null(state$request)) return(TRUE)
  sent <- worker_send(state$request, worker_chunk_values(),
                      signal(worker_position(), sendable(condition)), state$warnings)
  worker_collect_if_asked(state)
  !sent
}

cancelled <- function() {
  structure(class = c("bgpool_cancelled", "interrupt", "condition"),
            list(message = "cancelled", call = NULL))
}

# A condition as it travels to the master: its message a string (an empty
# one would say nothing), its call dropped when large (a call made by
# do.call() holds the arguments' values).
sendable <- function(condition) {
  message <- conditionMessage(condition)
  if (!is.character(message) || length(message) != 1L || is.na(message) || !nzchar(message))
    condition$message <- sprintf("a condition of class %s with no message", class(condition)[1L])
  if (!is.null(condition$call) && utils::object.size(condition$call) > 65536)
    condition$call <- NULL
  condition
}

# What init_pool() does to an existing worker (as AzureRMR does), and the
# start of a worker that replaces one that died.
worker_reset <- function(wd, lib_paths) {
  # (on another machine the master's directory may not exist)
  if (!isTRUE(.bgpool$remote_host) || dir.exists(wd)) setwd(wd)
  rm(list = ls(envir = .GlobalEnv, all.names = TRUE), envir = .GlobalEnv)
  if (is_native_worker()) worker_collect_later()  # shared vectors among them unmap
  worker_lib_paths(lib_paths)
}

worker_lib_paths <- function(lib_paths) {
  # (on another machine the master's paths that exist there come first,
  # and the host's own stay)
  .libPaths(if (isTRUE(.bgpool$remote_host)) unique(c(lib_paths, .libPaths())) else lib_paths)
  invisible(NULL)
}

# Assigns exported values (R/setup.R) in the global environment: each
# entry is a serialized snapshot (taken when it was exported), or a shared
# vector mapped from the master's copy. A shared vector replaced here is
# collected at once, so that its memory goes without waiting for R's next
# collection.
worker_assign <- function(entries) {
  values <- lapply(entries, function(entry)
    if (is.null(entry$shared)) unserialize(entry$snapshot) else entry$shared)
  names(values) <- vapply(entries, `[[`, "", "name")
  entries <- NULL
  native <- is_native_worker()
  replaced_shared <- native && any(vapply(names(values), function(name)
    is_shared_vector(get0(name, envir = .GlobalEnv, inherits = FALSE)), NA))
  assigned <- FALSE
  # a failed assignment (a locked binding) leaves no shared vector mapped
  on.exit(if (native && (!assigned || replaced_shared)) worker_collect_later())
  list2env(values, envir = .GlobalEnv)
  assigned <- TRUE
  invisible(NULL)
}

# Whether this process is a worker of the native backend (the only ones
# that receive shared vectors), not of the "psock" backend.
is_native_worker <- function() isTRUE(.bgpool$native_worker)

# A pool_call() or pool_evalq() recorded for replay (R/setup.R).
worker_replay <- function(call) {
  call <- unserialize(call)
  worker_call(call$fun, call$args)
  invisible(NULL)
}

# The routines of the template and the native workers (src/entry.h); the
# psock workers call worker_position(), worker_chunk_values(),
# worker_call() and worker_run_elements() too.
template_serve <- function() .Call(C_template_serve)
worker_connect <- function(slot) .Call(C_worker_connect, slot)
worker_serve <- function(state) .Call(C_worker_serve, state)
worker_send <- function(request, values, error, warnings)
  .Call(C_worker_send, request, values, error, warnings)
worker_cancel_requested <- function() .Call(C_worker_cancel_requested)
worker_collect_later <- function() .Call(C_worker_collect_later)
worker_collect_if_asked <- function(state) .Call(C_worker_collect_if_asked, state)
worker_run_elements <- function(job, inputs, start) .Call(C_worker_run_elements, job, inputs, start)
worker_position <- function() .Call(C_worker_position)
worker_chunk_values <- function() .Call(C_worker_chunk_values)
worker_call <- function(fun, args) .Call(C_worker_call, fun, args)
is_shared_vector <- function(x) .Call(C_is_shared_vector, x)
