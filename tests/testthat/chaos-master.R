# The randomized fault test's master (test-chaos.R runs it in a child R
# process, so that interrupting it interrupts nobody else). Each trial
# draws a pool size, a call and faults at random, runs the call, and
# checks what came of it against the promise: every element's right value,
# or an error that accounts for each element exactly once with the right
# value of each finished one, and only for faults that were made. Then the
# next call on the same pool must be right, and nothing may have leaked:
# processes, descriptors, shared memory segments, files in the pool's
# directory.
#
# run_chaos(seed, trials) returns one row per trial: its number, its seed,
# the faults drawn, the outcome, and the problems found ("" when none).

# Pools of up to 4 workers on any machine: the trials are about what comes
# of faults, not speed.
Sys.setenv("_R_CHECK_LIMIT_CORES_" = "false")

chaos_value <- function(i, offset) i * 7L + offset

# A task of the trial: sleeps, then returns chaos_value(); faults come from
# `plan` (per element: "none", "kill", "segfault", "quit", "slow", "error")
# and happen once per element when `once` (a file marks that they did).
chaos_task <- function(i, plan, sleeps, once_dir, offset_name) {
  fault <- plan[[i]]
  mark <- file.path(once_dir, paste0("fault-", i))
  strike <- fault != "none" && (is.null(once_dir) || !file.exists(mark))
  if (strike && !is.null(once_dir)) file.create(mark)
  if (strike) {
    switch(fault,
           kill = { tools::pskill(Sys.getpid(), tools::SIGKILL); Sys.sleep(10) },
           segfault = { tools::pskill(Sys.getpid(), 11L); Sys.sleep(10) },  # SIGSEGV
           quit = quit(save = "no", status = 3L),
           slow = Sys.sleep(30),
           error = stop("chaos: task ", i, " fails"))
  }
  Sys.sleep(sleeps[[i]])
  offset <- if (is.null(offset_name)) 0L else get(offset_name, envir = globalenv())
  i * 7L + offset  # chaos_value(), which the workers do not have
}
environment(chaos_task) <- globalenv()

children_of <- function(pid) {
  f <- sprintf("/proc/%d/task/%d/children", pid, pid)
  scan(f, quiet = TRUE)
}

memfds <- function() {
  fds <- list.files("/proc/self/fd", full.names = TRUE)
  targets <- suppressWarnings(vapply(fds, Sys.readlink, ""))
  sum(grepl(segment_pattern, targets))
}

# (shared segments are counted apart)
open_fds <- function() length(list.files("/proc/self/fd")) - memfds()

# What the pool's directory may hold: its lock, the template's and the
# workers' logs, and the temporary directories of live workers.
unexpected_files <- function(info) {
  top <- list.files(info$dir, all.files = TRUE, no.. = TRUE)
  allowed <- c("lock", "template.log", sprintf("worker-%d.log", seq_along(info$pids)),
               sprintf("tmp-%d", info$pids))
  setdiff(top, allowed)
}

# Draws a trial. `size`: the pool's size now.
draw_trial <- function(size) {
  resize <- runif(1) < 0.2
  size <- if (resize) sample.int(4L, 1L) else size
  n <- sample.int(30L, 1L)
  retry <- sample(0:2, 1L)
  faults <- c("kill", "segfault", "quit", "slow", "error")
  plan <- rep("none", n)
  struck <- if (runif(1) < 0.6) sample.int(n, min(n, sample.int(3L, 1L))) else integer()
  plan[struck] <- sample(faults, length(struck), replace = TRUE)
  timeout <- if (any(plan == "slow") || runif(1) < 0.1) sample(c(0.5, 1), 1L) else Inf
  sleeps <- ifelse(runif(n) < 0.8, runif(n, 0, 0.01), runif(n, 0.02, 0.15))
  list(size = size, resize = resize, n = n, fun = sample(c("lapply", "sapply", "map"), 1L),
       retry = retry, plan = plan, sleeps = sleeps, timeout = timeout,
       once = runif(1) < 0.7,
       interrupt = if (runif(1) < 0.15) runif(1, 0, 0.6) else NA,
       export = runif(1) < 0.2,
       cluster = runif(1) < 0.15)
}

describe_trial <- function(t) {
  struck <- which(t$plan != "none")
  sprintf("size %d%s, %s of %d, .retry %d, .timeout %s, faults {%s}%s%s%s%s",
          t$size, if (t$resize) " (new pool)" else "", t$fun, t$n, t$retry, format(t$timeout),
          paste(sprintf("%d:%s", struck, t$plan[struck]), collapse = ", "),
          if (t$once) " once" else " every time",
          if (!is.na(t$interrupt)) sprintf(", SIGINT at %.2f s", t$interrupt) else "",
          if (t$export) ", failing then good export" else "",
          if (t$cluster) ", cluster call" else "")
}

# A failing export (a binding locked on the workers), then a good one of a
# large (shared memory) vector whose sum the tasks add to their values.
export_faults <- function(problems) {
  pool_evalq({
    chaos_locked <- 0
    lockBinding("chaos_locked", globalenv())
  })
  chaos_locked <- 1
  chaos_big <- as.numeric(sample.int(1000L, 2e5, replace = TRUE))
  failed <- tryCatch({
    pool_export(c("chaos_locked", "chaos_big"), envir = environment())
    FALSE
  }, bgpool_task_error = function(e) TRUE)
  if (!failed) problems <- c(problems, "an export into a locked binding did not fail")
  pool_evalq(unlockBinding("chaos_locked", globalenv()))
  chaos_big[1] <- chaos_big[1] + 1
  pool_export("chaos_big", envir = environment())
  offset <- as.integer(sum(chaos_big) %% 1000)
  pool_evalq(chaos_offset <- as.integer(sum(chaos_big) %% 1000))
  list(problems = problems, offset = offset)
}

# Checks an error against the promise; returns the problems found.
check_error <- function(e, t, expected) {
  problems <- character()
  n <- t$n
  if (!inherits(e, "bgpool_error"))
    return(sprintf("an error that is not bgpool's: %s", conditionMessage(e)))
  all <- c(e$finished, e$failed, e$unfinished)
  if (length(all) != n || !setequal(all, seq_len(n)))
    problems <- c(problems, sprintf("finished/failed/unfinished do not account for each of %d elements once", n))
  if (length(e$results) != n) {
    problems <- c(problems, "`results` is not one per element")
  } else {
    wrong <- e$finished[!vapply(e$finished, function(i) identical(e$results[[i]], expected[[i]]), NA)]
    if (length(wrong)) problems <- c(problems, sprintf("wrong finished results: %s", toString(wrong)))
    stray <- setdiff(seq_len(n), e$finished)
    stray <- stray[!vapply(e$results[stray], is.null, NA)]
    if (length(stray)) problems <- c(problems, sprintf("results for unfinished elements: %s", toString(stray)))
  }
  erring <- which(t$plan == "error")
  if (length(setdiff(e$failed, erring)))
    problems <- c(problems, sprintf("elements failed that raised no error: %s", toString(setdiff(e$failed, erring))))
  # every element left unfinished was lost with a worker (or the call
  # stopped at a loss), and every loss had a cause the trial made: a
  # worker killed, or a time limit (which a slow machine may also reach)
  if (length(e$unfinished) && !length(e$losses))
    problems <- c(problems, "elements unfinished with no worker lost")
  for (lost in e$losses) {
    caused <- if (isTRUE(lost$timed_out)) is.finite(t$timeout)
              else any(t$plan %in% c("kill", "segfault", "quit"))
    if (!caused) problems <- c(problems, sprintf("a worker lost with no cause: %s", lost$how))
  }
  problems
}

run_trial <- function(t, state) {
  problems <- character()
  if (t$resize || !pool_exists() || pool_size() != t$size) {
    suppressMessages(init_pool(t$size, restart = TRUE))
    invisible(pool_cluster())
    invisible(pool_sapply(seq_len(2L * t$size), function(i) i))
    state$fds <- open_fds()
  }
  offset <- 0L
  offset_name <- NULL
  if (t$export) {
    got <- export_faults(problems)
    problems <- got$problems
    offset <- got$offset
    offset_name <- "chaos_offset"
  }
  once_dir <- if (t$once) tempfile("chaos-once-") else NULL
  if (!is.null(once_dir)) dir.create(once_dir)
  expected <- lapply(seq_len(t$n), chaos_value, offset = offset)
  call <- switch(t$fun,
    lapply = quote(pool_lapply(seq_len(t$n), chaos_task, plan = t$plan, sleeps = t$sleeps,
                               once_dir = once_dir, offset_name = offset_name,
                               .retry = t$retry, .timeout = t$timeout)),
    sapply = quote(pool_sapply(seq_len(t$n), chaos_task, plan = t$plan, sleeps = t$sleeps,
                               once_dir = once_dir, offset_name = offset_name,
                               simplify = FALSE, .retry = t$retry, .timeout = t$timeout)),
    map = quote(pool_map(chaos_task, seq_len(t$n),
                         MoreArgs = list(plan = t$plan, sleeps = t$sleeps, once_dir = once_dir,
                                         offset_name = offset_name),
                         .retry = t$retry, .timeout = t$timeout)))
  if (t$cluster) {
    got <- parallel::parSapply(pool_cluster(), 1:5, function(i) i * 3L)
    if (!identical(got, (1:5) * 3L)) problems <- c(problems, "a cluster call before the trial was wrong")
  }
  interrupter <- if (!is.na(t$interrupt))
    processx::process$new("sh", c("-c", sprintf("sleep %.3f; kill -INT %d", t$interrupt, Sys.getpid())))
  outcome <- tryCatch(list(kind = "value", value = eval(call)),
                      error = function(e) list(kind = "error", error = e),
                      interrupt = function(e) list(kind = "interrupt"))
  # an interrupt that comes after the call is taken here, not by what follows
  if (!is.null(interrupter)) {
    tryCatch(while (interrupter$is_alive()) Sys.sleep(0.02), interrupt = function(e) NULL)
    tryCatch(Sys.sleep(0.05), interrupt = function(e) NULL)
    rm(interrupter)
    gc()
  }
  what <- outcome$kind
  if (what == "value") {
    value <- outcome$value
    if (!identical(unname(value), expected))
      problems <- c(problems, "the call returned wrong values")
    fatal <- t$plan %in% c("error") | (!t$once & t$plan %in% c("kill", "segfault", "quit", "slow"))
    if (any(fatal)) problems <- c(problems, "the call returned although a fault it cannot survive was made")
  } else if (what == "error") {
    problems <- c(problems, check_error(outcome$error, t, expected))
    what <- paste("error", class(outcome$error)[1L])
  } else if (is.na(t$interrupt)) {
    problems <- c(problems, "an interrupt that nobody sent")
  }
  if (t$cluster) {
    got <- tryCatch(parallel::parSapply(pool_cluster(), 1:5, function(i) i * 3L),
                    error = function(e) conditionMessage(e))
    if (!identical(got, (1:5) * 3L)) problems <- c(problems, sprintf("a cluster call after the trial was wrong: %s", toString(got)))
  }
  # the next call on the same pool is right
  after <- tryCatch(pool_sapply(seq_len(3L * t$size), function(i) i + 1L),
                    error = function(e) conditionMessage(e))
  if (!identical(after, seq_len(3L * t$size) + 1L))
    problems <- c(problems, sprintf("the next call was wrong: %s", toString(after)))
  if (!is.null(once_dir)) unlink(once_dir, recursive = TRUE)
  # nothing leaked
  info <- bgpool:::pool_info()
  # the master's one child is the template, whose children are the workers
  kids <- children_of(Sys.getpid())
  workers <- if (length(kids) == 1L) children_of(kids) else integer()
  if (length(kids) != 1L || length(workers) != t$size || !all(info$pids %in% workers))
    problems <- c(problems, sprintf("the master has %d children and they %d, not the template and its %d workers",
                                    length(kids), length(workers), t$size))
  if (open_fds() != state$fds)
    problems <- c(problems, sprintf("%d descriptors open, %d after the pool started", open_fds(), state$fds))
  shared <- length(bgpool:::held_segments())
  if (memfds() != shared)
    problems <- c(problems, sprintf("%d shared segments open, %d held", memfds(), shared))
  mapped <- unlist(pool_call(function(pattern) sum(grepl(pattern, readLines("/proc/self/maps"))),
                             segment_pattern))
  if (any(mapped > shared))
    problems <- c(problems, sprintf("workers map %s segments, %d held", toString(mapped), shared))
  extra <- unexpected_files(info)
  if (length(extra)) problems <- c(problems, sprintf("files left in the pool's directory: %s", toString(extra)))
  list(outcome = what, problems = problems)
}

run_chaos <- function(seed, trials) {
  state <- new.env()
  rows <- list()
  for (k in trials) {
    say("chaos trial ", k)  # a child that dies names the trial it was in
    set.seed(seed + k)
    t <- draw_trial(if (pool_exists()) pool_size() else 2L)
    started <- Sys.time()
    got <- tryCatch(run_trial(t, state), error = function(e)
      list(outcome = "crash", problems = sprintf("the trial itself failed: %s", conditionMessage(e))))
    rows[[length(rows) + 1L]] <- data.frame(
      trial = k, seed = seed + k, faults = describe_trial(t), outcome = got$outcome,
      problems = paste(got$problems, collapse = "; "),
      seconds = as.numeric(difftime(Sys.time(), started, units = "secs")))
    if (length(got$problems)) {
      # a pool in an unknown state is not carried into the next trial
      suppressMessages(delete_pool())
    }
  }
  suppressMessages(delete_pool())
  do.call(rbind, rows)
}
