# The worker process: started by the master as
# `Rscript -e 'bgpool:::worker_main()'`, it connects back over the pool's
# private socket, then runs what it is sent until the master goes away.
# Messages (built in src/scheduler.cpp):
#   list(1L, call_id, start, inputs, job)  a chunk of elements; `job`
#       (function and fixed arguments) comes with a call's first chunk only
#   list(2L, call_id, fun, args)           do.call(fun, args) once
# Each gets the reply list(call_id, start, values, error, elapsed).

worker_main <- function() {
  worker_connect()
  job <- NULL
  repeat {
    message <- worker_receive()
    if (is.null(message)) break
    if (message[[1L]] == 1L) {
      if (!is.null(message[[5L]])) job <- prepare_job(message[[5L]])
      outcome <- run_chunk(job, message[[4L]])
    } else {
      outcome <- run_call(message[[3L]], message[[4L]])
    }
    reply <- list(message[[2L]], message[[3L]], outcome$values, outcome$error, outcome$elapsed)
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
  started <- monotonic_time()
  error <- tryCatch({
    worker_run_elements(job$call, env, n, job$nforce)
    NULL
  }, error = function(e) task_failure(e, env$k))
  list(values = env$values, error = error, elapsed = monotonic_time() - started)
}

run_call <- function(fun, args) {
  started <- monotonic_time()
  error <- NULL
  value <- tryCatch(do.call(fun, args, quote = TRUE),
                    error = function(e) {
                      error <<- task_failure(e, 1L)
                      NULL
                    })
  list(values = list(value), error = error, elapsed = monotonic_time() - started)
}

task_failure <- function(e, position) {
  list(position = position, message = conditionMessage(e), class = class(e))
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
