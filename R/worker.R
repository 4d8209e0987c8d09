# The template process, started by the master as
# `Rscript -e 'bgpool:::template_main()'`, forks a worker per request (see
# src/pool.h). A worker connects back over the pool's private socket, then
# runs what it is sent until the master goes away.
# Messages (built in src/scheduler.cpp):
#   list(1L, call_id, start, inputs, job)  a chunk of elements; `job`
#       (function, fixed arguments, and for seeded calls the first random
#       number stream `seed` and, in a re-run of some elements, their
#       original `index`) comes with a call's first chunk only
#   list(2L, call_id, fun, args)           do.call(fun, args) once
# Each gets the reply list(call_id, start, values, error, elapsed, warnings)
# (built in src/worker.cpp). A task's warnings travel back to be signalled
# in the master; its other output goes to the worker's log (pool_output()).

template_main <- function() {
  # An R process removes its temporary directory when it ends, also one
  # forked from the template, which would share the template's. So the
  # template gives its own up, and each worker makes one of its own, in the
  # pool's directory (TMPDIR), which goes with the pool.
  unlink(tempdir(), recursive = TRUE)
  slot <- template_serve()
  if (slot > 0) {
    tempdir(check = TRUE)
    worker_main(slot)
  }
  invisible(NULL)
}

# Error, interrupt (a cancelled call) and warning handlers are set up once
# around a loop over many messages, not once per message: they cost more
# than a small task. After a task's error the loop is entered afresh.
worker_main <- function(slot) {
  worker_connect(slot)
  state <- new.env(parent = emptyenv())
  state$job <- NULL
  repeat {
    finished <- tryCatch(
      withCallingHandlers(serve(state), warning = function(w) keep_warning(state, w)),
      error = function(e) reply_failure(state, e),
      interrupt = function(e) reply_failure(state, NULL))
    if (finished) break
  }
  invisible(NULL)
}

# Serves messages until the master goes away (TRUE). `state` tells the
# handlers which message is being run: `message`, the chunk's evaluation
# environment `env` (where k is the element being run) and `warnings`.
serve <- function(state) {
  repeat {
    state$message <- NULL
    message <- worker_receive()
    if (is.null(message)) return(TRUE)
    state$message <- message
    state$env <- NULL
    state$warnings <- NULL
    if (worker_call_cancelled()) {
      values <- NULL
      error <- cancelled(1L)
    } else if (message[[1L]] == 1L) {
      if (!is.null(message[[5L]])) state$job <- prepare_job(message[[5L]])
      values <- run_chunk(state, message[[4L]], message[[3L]])
      error <- NULL
    } else {
      values <- list(do.call(message[[3L]], message[[4L]], quote = TRUE))
      error <- NULL
    }
    if (!worker_send(message, values, error, state$warnings)) return(TRUE)
  }
}

# The call evaluated for element k of `inputs`, as lapply() and clusterMap()
# make it: fun(inputs[[k]], <extra>), or fun(inputs[[1]][[k]], ...,
# <MoreArgs>) named as the inputs are, with the extra arguments quoted as
# do.call(quote = TRUE) does. `nforce` element arguments are forced first.
prepare_job <- function(job) {
  extra <- lapply(job$extra, enquote)
  prepared <- if (job$kind == "lapply") {
    list(is_map = FALSE, nforce = 1L, call = as.call(c(list(job$fun, quote(inputs[[k]])), extra)))
  } else {
    args <- lapply(seq_len(job$arity), function(j) bquote(inputs[[.(j)]][[k]]))
    names(args) <- job$names
    list(is_map = TRUE, nforce = job$arity, call = as.call(c(list(job$fun), args, extra)))
  }
  c(prepared, list(seed = job$seed, index = job$index))
}

# `start`: how many elements of the call come before the chunk.
run_chunk <- function(state, inputs, start) {
  job <- state$job
  env <- new.env(parent = baseenv())
  env$inputs <- inputs
  state$env <- env
  # Seeded tasks use their own streams; the worker's own comes back after.
  if (!is.null(job$seed)) {
    saved <- rng_state()
    on.exit(restore_rng(saved))
  }
  worker_run_elements(job$call, env, if (job$is_map) length(inputs[[1L]]) else length(inputs),
                      job$nforce, job$seed, job$index, start)
  env$values
}

# The position (in the message) of the element being run.
position <- function(state) {
  if (is.null(state$env)) 1L else state$env$k
}

keep_warning <- function(state, w) {
  state$warnings[[length(state$warnings) + 1L]] <-
    list(position = position(state), message = conditionMessage(w), class = class(w))
  invokeRestart("muffleWarning")
}

# Replies to the message whose task failed (e = NULL: the call was
# cancelled), with the values of the elements before it. Returns whether
# the worker is done (the master has gone, or the failure was not a task's).
reply_failure <- function(state, e) {
  message <- state$message
  if (is.null(message)) return(!is.null(e))
  error <- if (is.null(e)) cancelled(position(state))
           else list(position = position(state), message = conditionMessage(e), class = class(e))
  values <- if (is.null(state$env)) NULL else state$env$values
  !worker_send(message, values, error, state$warnings)
}

cancelled <- function(position) {
  list(position = position, message = "cancelled", class = c("interrupt", "condition"))
}

# What init_pool() does to an existing worker (as AzureRMR does), and the
# start of a worker that replaces one that died.
worker_reset <- function(wd, lib_paths) {
  setwd(wd)
  rm(list = ls(envir = .GlobalEnv, all.names = TRUE), envir = .GlobalEnv)
  worker_lib_paths(lib_paths)
}

worker_lib_paths <- function(lib_paths) {
  .libPaths(lib_paths)
  invisible(NULL)
}

# `shared` describes vectors whose data came as shared segments (their
# fds came with the message, in the same order).
worker_assign <- function(values, shared = list()) {
  list2env(values, envir = .GlobalEnv)
  mapped <- lapply(shared, function(spec) {
    value <- map_shared_vector(worker_take_fd(), spec$type, spec$length)
    if (!is.null(spec$attributes)) attributes(value) <- spec$attributes
    value
  })
  list2env(mapped, envir = .GlobalEnv)
  invisible(NULL)
}
