# The "psock" backend (R/backend.R): the pool on a `parallel` socket
# cluster, as AzureRMR's pool is, for Windows, where the native core is not
# built. The master speaks parallel's worker protocol itself (a serialized
# list(type = "EXEC", data = list(fun, args, return, tag)) to a node's
# socket; the worker answers list(type = "VALUE", value, success, time,
# tag)), so that it can schedule elements dynamically, wait with a time
# limit and notice a worker that died. The tasks run on the workers as the
# native workers run them (psock_chunk(), psock_call() and src/tasks.h),
# with the same frames, seeds, errors and warnings.
#
# What it cannot do as the native backend does: its workers start as
# separate R processes (seconds, not milliseconds); values travel through
# localhost TCP, serialized, never shared; a worker past the time limit,
# or one whose call was interrupted, is killed and replaced rather than
# cancelled; how a lost worker ended is not known (it is not a child);
# an interrupt condition a task signals fails it (psock_interrupt()).
#
# The handle is an environment: the nodes, the workers' pids, which are
# usable, and what starting more needs.

psock_backend <- list(
  name = "psock",
  create = function(size, options, started) {
    if (!is.null(started$remote))
      stop("workers on other machines (`remote`) need the native backend, which this platform or options(bgpool.backend) does not use",
           call. = FALSE)
    pool <- new.env(parent = emptyenv())
    pool$owner <- Sys.getpid()
    pool$options <- options
    pool$dir <- tempfile("bgpool-")
    dir.create(pool$dir, mode = "0700")
    outfile <- options$outfile
    if (!is.null(outfile) && nzchar(outfile) && !can_append_to(outfile))
      stop(sprintf("cannot open the file for its output, %s", outfile), call. = FALSE)
    # each worker's own log, as the native workers have, unless the user
    # named one file (or "", the master's output) for them all
    pool$logs <- if (is.null(outfile)) file.path(pool$dir, sprintf("worker-%d.log", seq_len(size)))
                 else rep(outfile, size)
    pool$log_checked <- Sys.time()
    pool$nodes <- vector("list", size)
    pool$pids <- rep(NA_integer_, size)
    pool$usable <- logical(size)
    pool$owed <- integer(size)  # calls sent through the cluster, not yet collected
    tryCatch(psock_start(pool, seq_len(size)), error = function(e) {
      psock_stop(pool)
      stop(e)
    })
    pool
  },
  # a pool inherited by a forked process is only let go of
  stop = function(handle) if (identical(handle$owner, Sys.getpid())) psock_stop(handle),
  owned = function(handle) identical(handle$owner, Sys.getpid()) && !is.null(handle$nodes),
  state = function(handle) {
    list(pids = handle$pids, usable = handle$usable, logs = handle$logs,
         hosts = rep("", length(handle$pids)), dir = handle$dir)
  },
  prepare = function(handle, drain_cluster) psock_prepare(handle),
  replace = function(handle, slots) {
    psock_kill(handle, slots)
    psock_start(handle, slots)
  },
  kill = function(handle, slots) psock_kill(handle, slots),
  run_elements = function(...) psock_run_elements(...),
  run_on_workers = function(handle, fun, args, slots) psock_run_on_workers(handle, fun, args, slots),
  cluster = function(handle) psock_cluster(handle),
  cluster_busy = function(handle) any(handle$owed > 0),
  waits_for_cluster = FALSE,
  shares_memory = FALSE
)

# Starts workers in `slots`, with the options init_pool() was given. The
# workers inherit the master's environment, with the library paths and
# the `rscript_envs` added for as long as they start.
psock_start <- function(pool, slots) {
  options <- pool$options
  envs <- c(paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep)),
            # parallel's methods = FALSE leaves R's default packages, methods included
            if (isFALSE(options$methods)) "R_DEFAULT_PACKAGES=datasets,utils,grDevices,graphics,stats",
            # their temporary directories go with the pool's, even those of killed workers
            paste0("TMPDIR=", pool$dir),
            options$rscript_envs)
  names <- sub("=.*", "", envs)
  saved <- Sys.getenv(names, unset = NA, names = TRUE)
  on.exit({
    Sys.unsetenv(names[is.na(saved)])
    if (any(!is.na(saved))) do.call(Sys.setenv, as.list(saved[!is.na(saved)]))
  })
  do.call(Sys.setenv, stats::setNames(as.list(sub("^[^=]*=", "", envs)), names))
  cluster <- tryCatch(parallel::makePSOCKcluster(
    length(slots), rscript = options$rscript, rscript_args = options$rscript_args,
    # what parallel's workers say as they start, before each takes its own log
    outfile = if (is.null(options$outfile)) file.path(pool$dir, "start.log") else options$outfile,
    methods = options$methods, setup_timeout = options$setup_timeout,
    useXDR = FALSE), error = function(e) {
      stop(sprintf(paste("%s: the workers did not connect within %s seconds; if they start",
                         "slowly here, raise setup_timeout"),
                   conditionMessage(e), format(options$setup_timeout)), call. = FALSE)
    })
  pool$nodes[slots] <- unclass(cluster)
  pool$pids[slots] <- vapply(seq_along(slots), function(k) {
    node <- cluster[[k]]
    if (!psock_send(node, psock_worker_start, list(pool$logs[slots[k]]))) return(NA_integer_)
    reply <- psock_receive(node)
    if (is.null(reply)) NA_integer_ else reply$value
  }, 0L)
  pool$usable[slots] <- TRUE
  pool$owed[slots] <- 0L
  invisible(NULL)
}

# On a worker as it starts: what it prints, and what programs its tasks
# run print, go to its log. Returns its pid.
psock_worker_start <- function(log) {
  if (nzchar(log)) {
    con <- file(log, open = "a")
    sink(con)
    sink(con, type = "message")
    redirect_std_streams(log)
  }
  Sys.getpid()
}

# Requests carry this tag: a reply without it answers a call made through
# the pool's cluster and never collected, and is dropped.
psock_tag <- "bgpool"

# Sends a call; FALSE when the connection failed (the worker died).
psock_send <- function(node, fun, args) {
  message <- list(type = "EXEC", data = list(fun = fun, args = args, return = TRUE, tag = psock_tag))
  tryCatch({
    serialize(message, node$con, xdr = FALSE)
    TRUE
  }, error = function(e) FALSE)
}

# The next message from a node, or NULL when its connection failed.
psock_read <- function(node) {
  tryCatch(unserialize(node$con), error = function(e) NULL)
}

# The reply to the call sent last, or NULL when the connection failed.
psock_receive <- function(node) {
  repeat {
    reply <- psock_read(node)
    if (is.null(reply) || identical(reply$tag, psock_tag)) return(reply)
  }
}

# Kills the workers in `slots` and closes their connections.
psock_kill <- function(pool, slots) {
  for (slot in slots) {
    node <- pool$nodes[[slot]]
    if (!is.null(node)) try(close(node$con), silent = TRUE)
    if (!is.na(pool$pids[slot])) tools::pskill(pool$pids[slot], tools::SIGKILL)
    pool$nodes[slot] <- list(NULL)
    pool$usable[slot] <- FALSE
    pool$owed[slot] <- 0L  # whoever awaits its replies gets an error instead
  }
  invisible(NULL)
}

# Asks the workers to exit (parallel's "DONE"), waits a second at most for
# their connections to close, kills those still there (a task running),
# removes the pool's directory.
psock_stop <- function(pool) {
  live <- which(!vapply(pool$nodes, is.null, NA))
  for (slot in live)
    try(serialize(list(type = "DONE"), pool$nodes[[slot]]$con, xdr = FALSE), silent = TRUE)
  deadline <- Sys.time() + 1
  waiting <- live
  while (length(waiting) && (left <- as.double(deadline) - as.double(Sys.time())) > 0) {
    ready <- socketSelect(lapply(pool$nodes[waiting], `[[`, "con"), timeout = left)
    # a reply still owed is read past; the end of the stream means it exited
    ended <- vapply(pool$nodes[waiting[ready]], function(node) is.null(psock_read(node)), NA)
    waiting <- setdiff(waiting, waiting[ready][ended])
  }
  psock_kill(pool, waiting)
  for (node in pool$nodes) if (!is.null(node)) try(close(node$con), silent = TRUE)
  pool$nodes <- NULL
  pool$usable <- logical(length(pool$pids))
  unlink(pool$dir, recursive = TRUE)
  invisible(NULL)
}

# The slots whose worker must be replaced: killed, or found dead. An idle
# worker's socket that can be read from has closed (the worker ended) or
# holds a reply to a call sent through the pool's cluster and never
# collected, which is dropped.
psock_prepare <- function(pool) {
  psock_trim_logs(pool)
  idle <- which(pool$usable)
  if (length(idle)) {
    ready <- socketSelect(lapply(pool$nodes[idle], `[[`, "con"), timeout = 0)
    for (slot in idle[ready])
      if (is.null(psock_read(pool$nodes[[slot]]))) psock_kill(pool, slot)
  }
  which(!pool$usable)
}

# Keeps the workers' own logs (not a user's outfile) within
# options(bgpool.log_limit), looked at every 2 seconds at most.
psock_trim_logs <- function(pool) {
  limit <- getOption("bgpool.log_limit", 1e7)
  if (!is.null(pool$options$outfile) || !(limit > 0) ||
      Sys.time() - pool$log_checked < 2) return(invisible())
  pool$log_checked <- Sys.time()
  for (log in pool$logs) trim_log(log, limit, keep = min(1e6, limit / 2))
}

# The end of a log longer than `limit` is kept, after a line saying that
# earlier output was dropped. Its worker appends, so what it writes next
# goes after that.
trim_log <- function(log, limit, keep) {
  size <- file.size(log)
  if (is.na(size) || size <= limit) return(invisible())
  con <- file(log, open = "r+b")
  on.exit(close(con))
  seek(con, size - keep)
  tail <- readBin(con, "raw", keep)
  newline <- match(as.raw(10L), tail, nomatch = 0L)
  seek(con, 0, rw = "write")
  writeBin(c(charToRaw("[bgpool: earlier output of this worker was dropped to keep its log small]\n"),
             tail[-seq_len(newline)]), con)
  truncate(con)
  invisible()
}

# The last lines of a worker's log, for errors about one that died.
psock_log_tail <- function(pool, slot) {
  log <- pool$logs[slot]
  if (!nzchar(log) || !isTRUE(file.size(log) > 0)) return("")
  paste(utils::tail(readLines(log, warn = FALSE), 20L), collapse = "\n")
}

psock_loss <- function(pool, slot, tasks, timed_out) {
  how <- if (timed_out) "was stopped: its task ran longer than the time limit"
         else "ended: its connection closed"
  list(worker = slot, pid = pool$pids[slot], host = "", how = how, timed_out = timed_out,
       output = psock_log_tail(pool, slot), tasks = as.double(tasks))
}

# Runs the elements of a call (see R/run.R): chunks of consecutive elements
# go to whichever worker is free, each chunk at most a quarter of an equal
# share (or `chunk_size`). A lost worker's elements run again on the
# others while each has been lost at most `retry` times; one lost more
# often ends the call at once. Workers still running when this ends early
# (that, or an interrupt) are killed: none keeps
# running a call that has gone.
psock_run_elements <- function(pool, job, inputs, is_map, n, chunk_size, timeout, retry,
                               attempts, update) {
  slots <- which(pool$usable)
  if (chunk_size <= 0) chunk_size <- max(1, ceiling(n / (4 * max(1, length(slots)))))
  queue <- split(seq_len(n), ceiling(seq_len(n) / chunk_size))
  original <- if (is.null(job$index)) seq_len(n) else job$index
  outcome <- list(values = vector("list", n), finished = logical(n), failed = integer(),
                  errors = list(), warnings = list(), losses = list(),
                  attempts = if (is.null(attempts)) integer(n) else attempts)
  running <- vector("list", length(pool$nodes))
  on.exit(psock_kill(pool, which(!vapply(running, is.null, NA))))
  lose <- function(slot, timed_out) {
    tasks <- running[[slot]]$index
    outcome$losses[[length(outcome$losses) + 1L]] <<-
      psock_loss(pool, slot, tasks, timed_out)
    outcome$attempts[tasks] <<- outcome$attempts[tasks] + 1L
    psock_kill(pool, slot)
    running[slot] <<- list(NULL)
    again <- tasks[outcome$attempts[tasks] <= retry]
    if (length(again) && any(pool$usable)) queue <<- c(as.list(again), queue)
    # an element that cannot run again fails the call at once
    if (length(again) < length(tasks)) lost_for_good <<- TRUE
  }
  lost_for_good <- FALSE
  repeat {
    if (lost_for_good) break
    for (slot in which(pool$usable & vapply(running, is.null, NA))) {
      if (!length(queue)) break
      index <- queue[[1L]]
      queue <- queue[-1L]
      chunk_job <- job
      chunk_job$index <- as.double(original[index])
      running[[slot]] <- list(index = index, deadline = Sys.time() + timeout)
      if (!psock_send(pool$nodes[[slot]], psock_chunk,
                      list(chunk_job, take_elements(inputs, index, is_map), is_map)))
        lose(slot, FALSE)
    }
    busy <- which(!vapply(running, is.null, NA))
    if (!length(busy)) break
    psock_trim_logs(pool)
    # short waits: R notices setTimeLimit() only between them
    wait <- if (timeout > 0)
      max(0, min(0.25, vapply(running[busy], function(r) as.double(r$deadline), 0) - as.double(Sys.time())))
    else 0.25
    ready <- socketSelect(lapply(pool$nodes[busy], `[[`, "con"), timeout = wait)
    for (slot in busy[ready]) {
      reply <- psock_receive(pool$nodes[[slot]])
      if (is.null(reply)) {
        lose(slot, FALSE)
        next
      }
      outcome <- psock_take_chunk(outcome, running[[slot]]$index, reply)
      running[slot] <- list(NULL)
      if (!is.null(update)) update(sum(outcome$finished) + length(outcome$failed))
    }
    # a reply that came while others were read was in time: it is read first
    late <- if (timeout > 0) Filter(function(slot) Sys.time() >= running[[slot]]$deadline, busy[!ready])
    if (length(late)) {
      waiting <- socketSelect(lapply(pool$nodes[late], `[[`, "con"), timeout = 0)
      for (slot in late[!waiting]) lose(slot, TRUE)
    }
  }
  outcome
}

# Adds a chunk's reply (psock_chunk()'s value) to the outcome.
psock_take_chunk <- function(outcome, index, reply) {
  got <- reply$value
  if (!isTRUE(reply$success)) {
    # the worker could not even start the chunk (its message did not
    # unserialize there): each element fails with what it said
    condition <- simpleError(as.character(got))
    got <- list(values = list(), errors = lapply(seq_along(index), signal, condition),
                warnings = list())
  }
  failed_at <- vapply(got$errors, `[[`, 0L, SIGNAL_POSITION)
  done <- setdiff(seq_along(index), failed_at)
  outcome$values[index[seq_along(got$values)]] <- got$values
  outcome$finished[index[done]] <- TRUE
  outcome$failed <- c(outcome$failed, index[failed_at])
  outcome$errors <- c(outcome$errors, lapply(got$errors, `[[`, SIGNAL_CONDITION))
  outcome$warnings <- c(outcome$warnings, lapply(got$warnings, function(w) {
    w[[SIGNAL_POSITION]] <- index[w[[SIGNAL_POSITION]]]
    w
  }))
  outcome
}

# The pool's cluster: parallel's own nodes, which count the calls sent
# through them and not yet collected (`owed`), so that a pool_*() call
# never takes a reply that a cluster call awaits (R/pool.R refuses to run
# one while any is owed).
psock_cluster <- function(pool) {
  nodes <- lapply(seq_along(pool$nodes), function(slot) {
    node <- pool$nodes[[slot]]
    if (is.null(node)) return(NULL)
    structure(c(unclass(node), list(pool = pool, slot = slot)),
              class = c("bgpool_psock_node", class(node)))
  })
  # future keeps its books per cluster "name" (else a hash of the nodes)
  structure(nodes, class = c("bgpool_psock_cluster", "SOCKcluster", "cluster"), pool = pool,
            name = basename(pool$dir))
}

psock_owe <- function(node, change) {
  pool <- node$pool
  pool$owed[node$slot] <- max(0L, pool$owed[node$slot] + change)
}

# A send cut short (an interrupt) leaves the stream mid-message: that
# worker is replaced.
#' @exportS3Method parallel::sendData
sendData.bgpool_psock_node <- function(node, data) {
  sent <- FALSE
  on.exit(if (!sent) psock_kill(node$pool, node$slot))
  NextMethod()
  sent <- TRUE
  if (identical(data$type, "EXEC")) psock_owe(node, 1L)
  invisible(NULL)
}

# A reply that cannot be read, its worker gone, is owed no longer; a read
# cut short (an interrupt) leaves the stream mid-message, so the worker is
# replaced.
#' @exportS3Method parallel::recvData
recvData.bgpool_psock_node <- function(node) {
  read <- FALSE
  on.exit({
    psock_owe(node, -1L)
    if (!read) psock_kill(node$pool, node$slot)
  })
  value <- NextMethod()
  read <- TRUE
  value
}

#' @exportS3Method parallel::recvOneData
recvOneData.bgpool_psock_cluster <- function(cl) {
  got <- NextMethod()
  psock_owe(cl[[got$node]], -1L)
  got
}

# Calls fun(args) on the workers in `slots`, as run_on_workers() does.
psock_run_on_workers <- function(pool, fun, args, slots) {
  n <- length(slots)
  outcome <- list(values = vector("list", n), finished = logical(n), failed = integer(),
                  errors = list(), warnings = list(), losses = list())
  sent <- logical(n)
  on.exit(psock_kill(pool, slots[sent]))
  for (k in seq_len(n)) {
    if (pool$usable[slots[k]])
      sent[k] <- psock_send(pool$nodes[[slots[k]]], psock_call, list(fun, args))
  }
  for (k in seq_len(n)) {
    slot <- slots[k]
    reply <- if (sent[k]) psock_receive(pool$nodes[[slot]])
    sent[k] <- FALSE
    if (is.null(reply)) {
      outcome$losses[[length(outcome$losses) + 1L]] <- psock_loss(pool, slot, k, FALSE)
      psock_kill(pool, slot)
      next
    }
    got <- if (isTRUE(reply$success)) reply$value
           else list(error = simpleError(as.character(reply$value)))
    for (w in got$warnings)
      outcome$warnings[[length(outcome$warnings) + 1L]] <- signal(k, w[[SIGNAL_CONDITION]])
    if (is.null(got$error)) {
      if (!is.null(got$value)) outcome$values[[k]] <- got$value
      outcome$finished[k] <- TRUE
    } else {
      outcome$failed <- c(outcome$failed, k)
      outcome$errors <- c(outcome$errors, list(got$error))
    }
  }
  outcome
}

# On a worker: runs a chunk's elements as a native worker does
# (worker_run_elements(), src/tasks.h), each element's error recorded and
# the elements after it run too. Returns list(values, errors, warnings),
# errors and warnings as signals (R/protocol.R) at positions in the chunk.
psock_chunk <- function(job, inputs, is_map) {
  job <- prepare_job(job, NULL)
  n <- if (is_map) length(inputs[[1L]]) else length(inputs)
  state <- new.env(parent = emptyenv())
  state$warnings <- list()
  values <- vector("list", n)
  errors <- list()
  done <- 0L
  while (done < n) {
    rest <- seq.int(done + 1L, n)
    seen <- length(state$warnings)
    got <- tryCatch(
      withCallingHandlers(list(values = run_elements_here(job, take_elements(inputs, rest, is_map),
                                                          done)),
                          warning = function(w) keep_warning(state, w),
                          interrupt = psock_interrupt),
      error = function(e) list(values = worker_chunk_values(), at = worker_position(),
                               error = e))
    for (k in seq_len(length(state$warnings) - seen) + seen)
      state$warnings[[k]][[SIGNAL_POSITION]] <- done + state$warnings[[k]][[SIGNAL_POSITION]]
    if (length(got$values)) values[done + seq_along(got$values)] <- got$values
    if (is.null(got$error)) break
    done <- done + got$at
    errors[[length(errors) + 1L]] <- signal(done, sendable(got$error))
  }
  list(values = values, errors = errors, warnings = state$warnings)
}

# parallel's worker loop ends a call that signals an interrupt without a
# reply, leaving its master waiting: an interrupt condition (one a task
# signals itself, or Ctrl-C reaching a worker on Windows) fails the task
# here instead, where the native backend lets a signalled one return.
psock_interrupt <- function(i) {
  stop(errorCondition(paste("the task signalled an interrupt, which the psock backend cannot",
                            "resume: signal a condition of another class"),
                      class = "bgpool_interrupted_task", call = NULL))
}

# On a worker: fun(args) as a native worker calls it; list(value, error,
# warnings).
psock_call <- function(fun, args) {
  state <- new.env(parent = emptyenv())
  state$warnings <- list()
  got <- tryCatch(
    withCallingHandlers(list(value = worker_call(fun, args)),
                        warning = function(w) keep_warning(state, w, position = 1L),
                        interrupt = psock_interrupt),
    error = function(e) list(error = sendable(e)))
  got$warnings <- state$warnings
  got
}
