# The template process, started by the master as
# `Rscript -e 'bgpool:::template_main()'`, forks a worker per request (see
# src/pool.h). A worker connects back over the pool's private socket, then
# runs what it is sent until the master goes away.
# Messages (built in src/scheduler.cpp):
#   list(1L, call_id, start, inputs, job)  a chunk of elements; `job`
#       (function and fixed arguments) comes with a call's first chunk only
#   list(2L, call_id, fun, args)           do.call(fun, args) once
# Each gets the reply list(call_id, start, values, error, elapsed, warnings).
# A task's warnings travel back to be signalled in the master; its other
# output goes to the worker's log (see pool_output()).

template_main <- function() {
  slot <- template_serve()
  if (slot > 0) worker_main(slot)
  invisible(NULL)
}

worker_main <- function(slot) {
  worker_connect(slot)
  job <- NULL
  repeat {
    message <- worker_receive()
    if (is.null(message)) break
    if (worker_call_cancelled()) {
      outcome <- list(values = list(), error = task_interrupted(1L), elapsed = 0)
    } else if (message[[1L]] == 1L) {
      if (!is.null(message[[5L]])) job <- prepare_job(message[[5L]])
      outcome <- run_chunk(job, message[[4L]])
    } else {
      outcome <- run_call(message[[3L]], message[[4L]])
    }
    reply <- list(message[[2L]], message[[3L]], outcome$values, outcome$error,
                  outcome$elapsed, outcome$warnings)
    if (!worker_send(reply)) break
  }
  invisible(NULL)
}

# The call evaluated for element k of `inputs`, as lapply() and clusterMap()
# make it: fun(inputs[[k]], <extra>), or fun(inputs[[1]][[k]], ...,
# <MoreArgs>) named as the inputs are, with the extra arguments quoted as
# do.call(quote = TRUE) does. `nforce` element arguments are forced first.
prepare_job <- function(job) {
  extra <- lapply(job$extra, enquote)
  if (job$kind == "lapply")
    return(list(is_map = FALSE, nforce = 1L,
                call = as.call(c(list(job$fun, quote(inputs[[k]])), extra))))
  args <- lapply(seq_len(job$arity), function(j) bquote(inputs[[.(j)]][[k]]))
  names(args) <- job$names
  list(is_map = TRUE, nforce = job$arity, call = as.call(c(list(job$fun), args, extra)))
}

# Runs the job's call for each element; stops at the first error, reporting
# its position so that the master runs the rest elsewhere.
run_chunk <- function(job, inputs) {
  n <- if (job$is_map) length(inputs[[1L]]) else length(inputs)
  env <- new.env(parent = baseenv())
  env$inputs <- inputs
  collector <- warning_collector(function() env$k)
  started <- monotonic_time()
  error <- tryCatch({
    withCallingHandlers(worker_run_elements(job$call, env, n, job$nforce),
                        warning = collector$handle)
    NULL
  }, error = function(e) task_failure(e, env$k),
  interrupt = function(e) task_interrupted(env$k))
  list(values = env$values, error = error, elapsed = monotonic_time() - started,
       warnings = collector$warnings())
}

run_call <- function(fun, args) {
  collector <- warning_collector(function() 1L)
  started <- monotonic_time()
  error <- NULL
  value <- tryCatch({
    value <- withCallingHandlers(do.call(fun, args, quote = TRUE), warning = collector$handle)
    worker_task_done()
    value
  }, error = function(e) {
    error <<- task_failure(e, 1L)
    NULL
  }, interrupt = function(e) {
    error <<- task_interrupted(1L)
    NULL
  })
  list(values = list(value), error = error, elapsed = monotonic_time() - started,
       warnings = collector$warnings())
}

task_failure <- function(e, position) {
  worker_task_done()
  list(position = position, message = conditionMessage(e), class = class(e))
}

# The master cancelled the call; it drops this reply.
task_interrupted <- function(position) {
  worker_task_done()
  list(position = position, message = "cancelled", class = c("interrupt", "condition"))
}

# Keeps each warning (with the position of the element that raised it) and
# muffles it here, for the master to signal.
warning_collector <- function(position) {
  kept <- list()
  list(
    handle = function(w) {
      kept[[length(kept) + 1L]] <<- list(position = position(), message = conditionMessage(w),
                                         class = class(w))
      invokeRestart("muffleWarning")
    },
    warnings = function() if (length(kept)) kept
  )
}

# What init_pool() does to an existing worker (as AzureRMR does).
worker_reset <- function(wd) {
  setwd(wd)
  rm(list = ls(envir = .GlobalEnv, all.names = TRUE), envir = .GlobalEnv)
  invisible(NULL)
}

worker_assign <- function(values) {
  list2env(values, envir = .GlobalEnv)
  invisible(NULL)
}
