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
  message <- if (is.null(.bgpool$pool) || .bgpool$backend$owned(.bgpool$pool))
    sprintf("%s: the background pool does not exist; call init_pool() to create it", caller)
  else
    sprintf("%s: the background pool belongs to the R process that created it, not to this process forked from it (by mcparallel() or mclapply(), say), which cannot use it; call init_pool() here to create a pool of this process's own",
            caller)
  bgpool_error(message, "bgpool_no_pool")
}

# Labels for elements in messages: the index, and the name where there is one.
element_label <- function(index, labels) {
  label <- sprintf("element %s", format(index, scientific = FALSE))
  if (!is.null(labels) && !is.na(labels[index]) && nzchar(labels[index]))
    label <- sprintf("%s (\"%s\")", label, labels[index])
  label
}

# Signals in the master the warnings that tasks raised on workers, each as
# the condition it was there (with its class and fields).
resignal_warnings <- function(warnings) {
  for (w in warnings) warning(w[[SIGNAL_CONDITION]])
}

task_error <- function(caller, accounts, n, labels, unit = "element") {
  failed <- accounts$failed
  what <- if (unit == "element") element_label(failed[1L], labels) else sprintf("worker %d", failed[1L])
  message <- sprintf("%s: %s of %d failed: %s", caller, what, n,
                     conditionMessage(accounts$errors[[1L]]))
  if (length(failed) > 1L)
    message <- sprintf("%s\n(%d %ss failed in all; the error's `failed` and `errors` fields list them)",
                       message, length(failed), unit)
  do.call(bgpool_error, c(list(message, "bgpool_task_error"), accounts))
}

# Elements left unfinished: a worker died, lost its link, or was stopped for
# running past the time limit (class bgpool_task_timeout, a kind of
# bgpool_worker_died). The loss reported is the last one that left an
# element unfinished; all are in the error's `losses` field.
worker_lost_error <- function(caller, accounts, n, labels, unit = "element") {
  losses <- accounts$losses
  culprits <- Filter(function(lost) any(lost$tasks %in% accounts$unfinished), losses)
  lost <- if (length(culprits)) culprits[[length(culprits)]] else if (length(losses)) losses[[1L]]
  if (is.null(lost))
    return(do.call(bgpool_error, c(list(
      sprintf("%s: internal error: %d %ss did not run, and no worker was lost; please report this",
              caller, length(accounts$unfinished), unit), "bgpool_internal_error"), accounts)))
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
    "%s: %s %s%s; %d of %d %ss did not finish. Finished results are in the error's `results` field (`finished` lists them), the others in `unfinished` and `failed`; the worker is replaced at the next call. %s%s",
    caller, lost_worker_label(lost), lost$how, running, length(accounts$unfinished), n, unit,
    advice, output)
  class <- if (lost$timed_out) c("bgpool_task_timeout", "bgpool_worker_died") else "bgpool_worker_died"
  do.call(bgpool_error, c(list(message, class, worker = lost$worker, pid = lost$pid,
                               host = lost$host, how = lost$how, output = lost$output, tasks = tasks), accounts))
}

# "worker 3 (pid 123)", and the host of a worker on another machine.
lost_worker_label <- function(lost) {
  sprintf("worker %d (pid %d%s)", lost$worker, lost$pid,
          if (nzchar(lost$host)) paste(" on", lost$host) else "")
}

# A worker that replaced a dead one could not be set up as the others.
worker_replaced_error <- function(caller, slots, cause) {
  bgpool_error(
    sprintf("%s: worker%s %s replaced one that died, but setting it up as the others were (the exports, pool_call() and pool_evalq() calls since init_pool(), replayed in order) failed: %s\nThe worker was stopped, so that no task runs on a worker set up differently. Create the pool afresh with init_pool(restart = TRUE) and set it up again.",
            caller, if (length(slots) > 1L) "s" else "", paste(slots, collapse = ", "),
            conditionMessage(cause)),
    "bgpool_setup_failed", workers = slots, parent = cause)
}
