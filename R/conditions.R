# Conditions raised by bgpool. Every error has class `bgpool_error` and a
# more specific class, and says what went wrong and what to do.

bgpool_error <- function(message, class = NULL, ..., call = NULL) {
  structure(
    class = c(class, "bgpool_error", "error", "condition"),
    list(message = message, call = call, ...)
  )
}

abort <- function(message, class = NULL, ...) {
  stop(bgpool_error(message, class, ...))
}

no_pool_error <- function(caller) {
  bgpool_error(
    sprintf("%s: the background pool does not exist; call init_pool() to create it", caller),
    "bgpool_no_pool"
  )
}

# Labels for elements in messages: the index, and the name where there is one.
element_label <- function(index, labels) {
  label <- sprintf("element %s", format(index, scientific = FALSE))
  if (!is.null(labels) && !is.na(labels[index]) && nzchar(labels[index]))
    label <- sprintf("%s (\"%s\")", label, labels[index])
  label
}

# Signals in the master the warnings that tasks raised on workers.
resignal_warnings <- function(warnings) {
  for (w in warnings)
    warning(structure(class = w$class, list(message = w$message, call = NULL)))
}

# The original conditions of failed tasks, rebuilt from what the worker sent.
task_conditions <- function(errors) {
  lapply(errors, function(e) structure(class = e$class, list(message = e$message, call = NULL)))
}

task_error <- function(caller, result, n, labels, unit = "element") {
  failed <- result$failed
  first <- result$errors[[1L]]
  what <- if (unit == "element") element_label(failed[1L], labels) else sprintf("worker %d", failed[1L])
  message <- sprintf("%s: %s of %d failed: %s", caller, what, n, first$message)
  if (length(failed) > 1L)
    message <- sprintf("%s\n(%d %ss failed in all; the error's `failed` and `errors` fields list them)",
                       message, length(failed), unit)
  bgpool_error(message, "bgpool_task_error",
               failed = failed, errors = task_conditions(result$errors),
               results = result$values)
}

# A worker that died, lost its link, or was stopped for running past the
# time limit (class bgpool_task_timeout, a kind of bgpool_worker_died).
worker_lost_error <- function(caller, result, n, labels) {
  lost <- result$lost
  tasks <- lost$tasks
  running <- if (length(tasks)) {
    sprintf(" while running %s%s", element_label(tasks[1L], labels),
            if (length(tasks) > 1L) sprintf(" (and %d more elements queued)", length(tasks) - 1L) else "")
  } else ""
  output <- if (nzchar(lost$output)) paste0("\nIts last output:\n", lost$output) else ""
  advice <- if (lost$timed_out)
    "Raise `.timeout` (or options(bgpool.timeout)) if the task needs longer."
  else
    "Set `.retry` (or options(bgpool.retry)) to re-run lost elements on a fresh worker."
  message <- sprintf(
    "%s: worker %d (pid %d) %s%s. Finished results are in the error's `results` field, unfinished elements in `unfinished`; the worker is replaced at the next call. %s%s",
    caller, lost$worker, lost$pid, lost$how, running, advice, output)
  class <- if (lost$timed_out) c("bgpool_task_timeout", "bgpool_worker_died") else "bgpool_worker_died"
  bgpool_error(message, class,
               worker = lost$worker, pid = lost$pid, how = lost$how, output = lost$output,
               tasks = tasks, results = result$values, unfinished = which(!result$done),
               failed = result$failed, errors = task_conditions(result$errors))
}
