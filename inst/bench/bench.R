# Benchmark of bgpool against the peers it replaces or competes with, in one
# run: a `parallel` PSOCK cluster (AzureRMR's path) and, when installed,
# mirai (>= 2.0). Each workload is verified; a wrong result stops the run.
# See inst/bench/README.md for the workloads and targets.
#
# Usage: Rscript inst/bench/bench.R [--size N] [--quick] [--out FILE]
#   --size N    workers in each pool, cluster or daemon set (default 10)
#   --quick     smaller objects, fewer tasks and repetitions (about a minute)
#   --out FILE  markdown result file (default: results-sizeN[-quick].md
#               next to this script)

options(warn = 1)
usage <- "usage: Rscript inst/bench/bench.R [--size N] [--quick] [--out FILE]"
run_started <- Sys.time()

# ---- arguments --------------------------------------------------------------
argv <- commandArgs(trailingOnly = TRUE)
opt <- list(size = 10L, quick = FALSE, out = NULL)
i <- 1L
while (i <= length(argv)) {
  a <- argv[[i]]
  if (a %in% c("-h", "--help")) {
    cat(usage, "\n"); quit(status = 0)
  } else if (a == "--quick") {
    opt$quick <- TRUE
  } else if (grepl("^--(size|out)=", a)) {
    key <- sub("^--([a-z]+)=.*$", "\\1", a)
    opt[[key]] <- sub("^--[a-z]+=", "", a)
  } else if (a %in% c("--size", "--out")) {
    if (i == length(argv)) stop(a, " needs a value\n", usage, call. = FALSE)
    opt[[sub("^--", "", a)]] <- argv[[i + 1L]]
    i <- i + 1L
  } else {
    stop("unknown argument: ", a, "\n", usage, call. = FALSE)
  }
  i <- i + 1L
}
N <- suppressWarnings(as.integer(opt$size))
if (length(N) != 1L || is.na(N) || N < 1L)
  stop("--size must be a positive whole number\n", usage, call. = FALSE)
QUICK <- isTRUE(opt$quick)

script_file <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])
bench_dir <- if (is.na(script_file)) file.path("inst", "bench") else dirname(normalizePath(script_file))
out_file <- if (is.null(opt$out)) {
  file.path(bench_dir, sprintf("results-size%d%s.md", N, if (QUICK) "-quick" else ""))
} else opt$out
command_line <- paste(c("Rscript inst/bench/bench.R", argv), collapse = " ")

# This is a benchmark, not a package check: the limit of 2 processes that
# `make` exports for tests must not stop makeCluster(10).
Sys.unsetenv("_R_CHECK_LIMIT_CORES_")

suppressPackageStartupMessages(library(bgpool))
library(parallel)
mirai_version <- if (requireNamespace("mirai", quietly = TRUE)) utils::packageVersion("mirai") else NULL
HAVE_MIRAI <- !is.null(mirai_version) && mirai_version >= "2.0.0"
mirai_note <- if (HAVE_MIRAI) NULL else if (is.null(mirai_version)) {
  "mirai is not installed: its columns are skipped (install it with `Rscript .ci/deps.R mirai`)."
} else {
  sprintf("mirai %s is older than 2.0: its columns are skipped.", mirai_version)
}

# ---- sizes ------------------------------------------------------------------
CFG <- if (!QUICK) list(
  reps_start = 3L,      # W1: pool start-ups per backend
  reps = 5L,            # W2, W6
  reps_gather = 3L,     # W5
  reps_big = 3L,        # W4, bgpool
  reps_big_peer = 2L,   # W4, PSOCK and mirai (15-90 s each at 10 workers)
  big_peer_budget = 60, # W4 peers: no further repetition after this many seconds
  tiny_n = 10000L,      # W2 tasks
  tiny_big_n = 100000L, # W2 tasks, the larger size (pool_lapply and parLapply)
  rt_calls = 200L,      # W3 calls per configuration (median)
  big_mb = 400,         # W4 object size (1 MB = 1e6 bytes)
  gather_n = 10L,       # W5 tasks
  gather_len = 5e6,     # W5 doubles per result (40 MB)
  sleep_n = 500L,       # W6 tasks
  sleep_s = 0.01,       # W6 seconds per task
  lb_n = 200L,          # W7 clusterApplyLB tasks (W7 parLapply: tiny_n, clusterCall: rt_calls)
  export_mb = 40        # W7 clusterExport object size
) else list(
  reps_start = 2L, reps = 2L, reps_gather = 2L, reps_big = 2L, reps_big_peer = 1L,
  big_peer_budget = 0, tiny_n = 2000L, tiny_big_n = 20000L, rt_calls = 50L, big_mb = 40,
  gather_n = 10L, gather_len = 5e5, sleep_n = 100L, sleep_s = 0.01, lb_n = 100L, export_mb = 4
)
CFG$big_len <- CFG$big_mb * 1e6 / 8
IDEAL_W6 <- CFG$sleep_n * CFG$sleep_s / N
SLEEP_REAL <- NA_real_

# ---- small helpers ------------------------------------------------------------
now <- function() as.numeric(Sys.time())   # microsecond resolution on Linux
say <- function(...) message(sprintf(...))
MB <- function(bytes) bytes / 1e6

# Task functions live in the global environment, so that serializing them
# sends no enclosing frame (and the same on every backend).
as_task <- function(f) { environment(f) <- globalenv(); f }
inc <- as_task(function(x) x + 1)
gather_task <- as_task(eval(bquote(function(i) rep(as.double(i), .(CFG$gather_len)))))
sleep_task <- as_task(eval(bquote(function(i) { Sys.sleep(.(CFG$sleep_s)); i })))

# A wrong result stops the whole run; any other error is recorded in the
# table and the run goes on.
wrong <- function(fmt, ...) {
  stop(structure(class = c("bench_wrong_result", "error", "condition"),
                 list(message = paste("WRONG RESULT:", sprintf(fmt, ...)), call = NULL)))
}
# mirai hands back task errors as values: turn them into errors.
no_error_values <- function(res) {
  bad <- vapply(res, function(r) inherits(r, "errorValue") || inherits(r, "miraiError"), NA)
  if (any(bad)) stop("task error: ", paste(format(res[[which(bad)[1]]]), collapse = " "), call. = FALSE)
  res
}

# ---- memory from /proc ----------------------------------------------------------
proc_kb <- function(path, keys) {
  lines <- tryCatch(suppressWarnings(readLines(path, warn = FALSE)), error = function(e) character())
  vapply(keys, function(k) {
    hit <- grep(paste0("^", k, ":"), lines, value = TRUE)
    if (!length(hit)) NA_real_ else as.numeric(strsplit(trimws(sub("^[^:]*:", "", hit[1])), " +")[[1]][1])
  }, 0)
}
# bytes: VmRSS, VmHWM (peak, since the last reset) and Pss (shared pages
# divided among the processes that map them)
proc_mem <- function(pid) {
  s <- proc_kb(sprintf("/proc/%d/status", pid), c("VmRSS", "VmHWM"))
  p <- proc_kb(sprintf("/proc/%d/smaps_rollup", pid), "Pss")
  1024 * c(rss = s[[1]], hwm = s[[2]], pss = p[[1]])
}
mem_table <- function(pids) {
  if (!length(pids)) return(matrix(numeric(), 0, 3, dimnames = list(NULL, c("rss", "hwm", "pss"))))
  m <- t(vapply(pids, proc_mem, c(rss = 0, hwm = 0, pss = 0)))
  rownames(m) <- pids
  m
}
reset_peaks <- function(pids) {
  for (p in pids) try(cat("5\n", file = sprintf("/proc/%d/clear_refs", p)), silent = TRUE)
}
system_shmem <- function() 1024 * proc_kb("/proc/meminfo", "Shmem")[[1]]
MASTER <- Sys.getpid()

# Live children of the master: a backend's helper processes (bgpool's
# template process that forks workers) and workers it re-parents to itself.
child_pids <- function() {
  stats <- Sys.glob("/proc/[0-9]*/stat")
  kids <- vapply(stats, function(f) {
    st <- tryCatch(suppressWarnings(readLines(f, warn = FALSE)), error = function(e) "")[1]
    rest <- strsplit(sub("^.*\\) ", "", st), " ", fixed = TRUE)[[1]]
    length(rest) >= 2L && rest[1] != "Z" && rest[2] == as.character(MASTER)
  }, NA)
  as.integer(basename(dirname(stats[kids])))
}
# the worker processes of a backend, with its helpers
backend_pids <- function(ctx) unique(c(ctx$pids, child_pids()))

# gone = no /proc entry, or a zombie
wait_gone <- function(pids, timeout = 15) {
  pids <- unique(as.integer(pids))
  t0 <- now()
  alive <- function(p) {
    st <- tryCatch(suppressWarnings(readLines(sprintf("/proc/%d/stat", p), warn = FALSE)),
                   error = function(e) "")
    nzchar(st[1]) && !grepl("^[0-9]+ \\(.*\\) Z ", st[1])
  }
  while (length(pids) && now() - t0 < timeout) {
    pids <- pids[vapply(pids, alive, NA)]
    if (length(pids)) Sys.sleep(0.05)
  }
  invisible(!length(pids))
}
settle <- function() { invisible(gc()); Sys.sleep(0.2) }

# ---- backends: start and stop, outside the timed regions -------------------------
bgpool_pids <- function() {
  pids <- tryCatch(bgpool:::pool_info()$pids, error = function(e) NULL)
  if (is.null(pids)) pids <- unlist(pool_call(Sys.getpid))
  as.integer(pids)
}
start_backend <- function(backend, n) {
  ctx <- new.env()
  ctx$n <- n
  if (backend == "bgpool") {
    if (pool_exists()) suppressMessages(delete_pool())
    suppressMessages(init_pool(n))
    ctx$pids <- bgpool_pids()
  } else if (backend == "bgpool_cluster") {
    ctx <- start_backend("bgpool", n)
    ctx$cl <- pool_cluster()
  } else if (backend %in% c("psock", "mirai_cluster")) {
    ctx$cl <- if (backend == "psock") makeCluster(n) else mirai::make_cluster(n)
    ctx$pids <- as.integer(unlist(clusterCall(ctx$cl, Sys.getpid)))
  } else if (backend == "mirai") {
    mirai::daemons(n, dispatcher = FALSE)
    ctx$mirai <- TRUE
    ctx$pids <- as.integer(unlist(no_error_values(mirai::everywhere(Sys.getpid(), .min = n)[])))
  }
  ctx
}
stop_backend <- function(ctx) {
  if (is.null(ctx)) return(invisible())
  pids <- backend_pids(ctx)
  if (pool_exists()) try(suppressMessages(delete_pool()), silent = TRUE)
  if (!is.null(ctx$cl)) try(stopCluster(ctx$cl), silent = TRUE)
  if (isTRUE(ctx$mirai)) try(mirai::daemons(0), silent = TRUE)
  ctx$cl <- NULL
  ctx$mirai <- NULL
  if (length(pids)) wait_gone(pids)
  invisible()
}
cleanup_all <- function() {
  if (pool_exists()) try(suppressMessages(delete_pool()), silent = TRUE)
  if (HAVE_MIRAI) try(mirai::daemons(0), silent = TRUE)
}

BACKEND_NAME <- c(bgpool = "bgpool", psock = "parallel PSOCK", mirai = "mirai", c_floor = "C program",
                  bgpool_cluster = "bgpool pool_cluster()", mirai_cluster = "mirai make_cluster()")

# ---- results ----------------------------------------------------------------------
ROWS <- list()
ERRORS <- character()
add_row <- function(row) {
  defaults <- list(workload = "", backend = "", call = "", key = "", ref = NA_character_,
                   reps = "", seconds = NA_real_, tasks = NA_real_,
                   master_peak = NA_real_, workers_peak = NA_real_, workers_pss = NA_real_,
                   target_kind = NA_character_, target_value = NA_real_, target_text = "",
                   metric = NA_real_, metric_text = "", mem = NULL, error = NA_character_)
  row <- utils::modifyList(defaults, row)
  ROWS[[length(ROWS) + 1L]] <<- row
  invisible(row)
}
error_row <- function(spec, e) {
  msg <- conditionMessage(e)
  say("    ERROR: %s", msg)
  ERRORS[[length(ERRORS) + 1L]] <<- sprintf("%s, %s `%s`: %s", spec$workload,
                                            BACKEND_NAME[[spec$backend]], spec$call, msg)
  add_row(c(spec[setdiff(names(spec), "backend")], list(backend = BACKEND_NAME[[spec$backend]], error = msg)))
}

# Repeat `run` (timed) `reps` times on contexts from `setup`, verify each result
# with `check` (outside the timed region), keep the fastest time and the
# largest memory figures. `workers(ctx)` gives the worker pids, asked before
# and after the run (W1 has none before).
# spec: workload, backend, call, key, ref, tasks, target_*
measure <- function(spec, reps, setup, run, check, teardown = function(ctx) NULL,
                    workers = backend_pids, budget = Inf, object_bytes = NA) {
  say("  %s: %s %s", spec$workload, BACKEND_NAME[[spec$backend]], spec$call)
  tryCatch({
    times <- numeric()
    mems <- list()
    for (r in seq_len(reps)) {
      ctx <- setup(r)
      finished <- FALSE
      tryCatch({
        before_pids <- c(MASTER, workers(ctx))
        invisible(gc())
        reset_peaks(before_pids)
        before <- mem_table(before_pids)
        shm0 <- system_shmem()
        t0 <- now()
        res <- run(ctx)
        elapsed <- now() - t0
        invisible(gc())
        after_pids <- c(MASTER, workers(ctx))
        after <- mem_table(after_pids)
        shm1 <- system_shmem()
        check(res, ctx, r)
        rm(res)
        base <- before[match(after_pids, before_pids), , drop = FALSE]
        base[is.na(base)] <- 0          # workers that did not exist before
        w <- after_pids != MASTER
        mems[[r]] <- c(
          master_peak = after[1, "hwm"],
          workers_peak = sum(after[w, "hwm"]),
          workers_pss = sum(after[w, "pss"]),
          master_growth = after[1, "hwm"] - before[1, "rss"],
          extra_rss = sum(after[, "rss"] - base[, "rss"]),
          extra_pss = sum(after[, "pss"] - base[, "pss"]),
          peak_growth = sum(after[, "hwm"] - base[, "rss"]),
          shmem = shm1 - shm0)
        times[r] <- elapsed
        say("    rep %d/%d: %.4f s", r, reps, elapsed)
        finished <- TRUE
      }, finally = if (!finished) try(teardown(ctx), silent = TRUE))
      teardown(ctx)
      if (sum(times) > budget) break
    }
    mem <- do.call(pmax, mems)
    add_row(c(spec[setdiff(names(spec), "backend")], list(
      backend = BACKEND_NAME[[spec$backend]],
      reps = if (length(times) < reps) sprintf("%d of %d", length(times), reps) else as.character(length(times)),
      seconds = min(times), master_peak = mem[["master_peak"]], workers_peak = mem[["workers_peak"]],
      workers_pss = mem[["workers_pss"]],
      mem = c(mem, object = object_bytes))))
  }, error = function(e) {
    if (inherits(e, "bench_wrong_result")) stop(e)
    error_row(spec, e)
  })
}

# W3, W7: many single calls on one started backend; median per call.
measure_calls <- function(spec, ctx, call, check, calls = CFG$rt_calls, warmup = 10L) {
  say("  %s: %s %s", spec$workload, BACKEND_NAME[[spec$backend]], spec$call)
  tryCatch({
    for (k in seq_len(warmup)) check(call())
    pids <- c(MASTER, backend_pids(ctx))
    invisible(gc())
    reset_peaks(pids)
    times <- numeric(calls)
    for (k in seq_len(calls)) {
      t0 <- now()
      v <- call()
      times[k] <- now() - t0
      check(v)
    }
    after <- mem_table(pids)
    say("    median %.1f us, min %.1f us", 1e6 * stats::median(times), 1e6 * min(times))
    add_row(c(spec[setdiff(names(spec), "backend")], list(
      backend = BACKEND_NAME[[spec$backend]],
      reps = sprintf("%d calls, median", calls), seconds = stats::median(times), tasks = 1,
      master_peak = after[1, "hwm"], workers_peak = sum(after[-1, "hwm"]),
      workers_pss = sum(after[-1, "pss"]))))
  }, error = function(e) {
    if (inherits(e, "bench_wrong_result")) stop(e)
    error_row(spec, e)
  })
}

# Start a backend for a block of measurements; if it cannot start, each of
# the block's rows records the error.
with_backend <- function(backend, n, specs, code) {
  ctx <- tryCatch(start_backend(backend, n), error = function(e) e)
  if (inherits(ctx, "error")) {
    for (s in specs) error_row(s, simpleError(paste("could not start:", conditionMessage(ctx))))
    cleanup_all()
    return(invisible())
  }
  on.exit(stop_backend(ctx))
  code(ctx)
}

same <- function(ctx) ctx
backends <- c("bgpool", "psock", if (HAVE_MIRAI) "mirai")

# ---- W1: start ------------------------------------------------------------------------
check_pids <- function(what) function(res, ctx, r) {
  p <- unlist(res)
  if (length(res) != N || length(unique(p)) != N || !is.numeric(p))
    wrong("%s: expected %d distinct worker pids, got %s", what, N, paste(format(p), collapse = " "))
}
w1 <- function() {
  W <- "W1 start"
  say("%s: %d workers until every worker answers", W, N)
  start_teardown <- function(ctx) stop_backend(ctx)
  measure(list(workload = W, backend = "bgpool", call = "init_pool + pool_call", key = "W1"),
          CFG$reps_start, setup = function(r) new.env(),
          run = function(ctx) {
            suppressMessages(init_pool(N))
            res <- pool_call(Sys.getpid)
            ctx$pids <- as.integer(unlist(res))
            res
          }, check = check_pids("init_pool"), teardown = start_teardown)
  start_target <- if (N <= 2L) 1 else 3
  measure(list(workload = W, backend = "psock", call = "makeCluster + clusterCall", key = "W1:psock",
               ref = "W1", target_kind = "ratio_ge", target_value = start_target,
               target_text = if (start_target == 1) "bgpool never slower (>= 1x)" else "bgpool <= 1/3 of PSOCK's time"),
          CFG$reps_start, setup = function(r) new.env(),
          run = function(ctx) {
            ctx$cl <- makeCluster(N)
            res <- clusterCall(ctx$cl, Sys.getpid)
            ctx$pids <- as.integer(unlist(res))
            res
          }, check = check_pids("makeCluster"), teardown = start_teardown)
  if (HAVE_MIRAI)
    measure(list(workload = W, backend = "mirai", call = "daemons + everywhere()[]", key = "W1:mirai",
                 ref = "W1"),
            CFG$reps_start, setup = function(r) new.env(),
            run = function(ctx) {
              mirai::daemons(N, dispatcher = FALSE)
              ctx$mirai <- TRUE
              res <- no_error_values(mirai::everywhere(Sys.getpid(), .min = N)[])
              ctx$pids <- as.integer(unlist(res))
              res
            }, check = check_pids("daemons"), teardown = start_teardown)
}

# ---- W2: tiny tasks -----------------------------------------------------------------------
w2 <- function() {
  W <- "W2 tiny tasks"
  check <- function(what, n) function(res, ctx, r) {
    if (!is.list(res) || length(res) != n || !identical(unlist(res, use.names = FALSE), seq_len(n) + 1))
      wrong("%s over %d tiny tasks: results differ from (1:n) + 1", what, n)
  }
  n <- CFG$tiny_n
  X <- seq_len(n)
  big_n <- CFG$tiny_big_n
  big_X <- seq_len(big_n)
  say("%s: %d and %d calls of function(x) x + 1", W, n, big_n)
  us_target <- list(target_kind = "us_le", target_value = 20, target_text = "<= 20 us/task")
  never_slower <- list(target_kind = "ratio_ge", target_value = 1, target_text = "bgpool never slower (>= 1x)")
  lapply_big <- sprintf("pool_lapply, %s tasks", format(big_n, big.mark = ","))
  with_backend("bgpool", N, list(
    list(workload = W, backend = "bgpool", call = "pool_map", key = "W2:map"),
    list(workload = W, backend = "bgpool", call = "pool_lapply", key = "W2:lapply"),
    list(workload = W, backend = "bgpool", call = lapply_big, key = "W2:lapply_big")), function(ctx) {
    measure(c(list(workload = W, backend = "bgpool", call = "pool_map", key = "W2:map", tasks = n), us_target),
            CFG$reps, setup = function(r) ctx, run = function(ctx) pool_map(inc, X), check = check("pool_map", n))
    measure(c(list(workload = W, backend = "bgpool", call = "pool_lapply", key = "W2:lapply", tasks = n), us_target),
            CFG$reps, setup = function(r) ctx, run = function(ctx) pool_lapply(X, inc), check = check("pool_lapply", n))
    measure(list(workload = W, backend = "bgpool", call = lapply_big, key = "W2:lapply_big", tasks = big_n),
            CFG$reps, setup = function(r) ctx, run = function(ctx) pool_lapply(big_X, inc),
            check = check("pool_lapply", big_n))
  })
  parlapply_big <- sprintf("parLapply, %s tasks", format(big_n, big.mark = ","))
  with_backend("psock", N, list(
    list(workload = W, backend = "psock", call = "clusterMap"),
    list(workload = W, backend = "psock", call = "parLapply"),
    list(workload = W, backend = "psock", call = parlapply_big)), function(ctx) {
    measure(list(workload = W, backend = "psock", call = "clusterMap", ref = "W2:map", tasks = n,
                 target_kind = "ratio_ge", target_value = 20, target_text = "pool_map >= 20x faster"),
            CFG$reps, setup = function(r) ctx, run = function(ctx) clusterMap(ctx$cl, inc, X),
            check = check("clusterMap", n))
    measure(c(list(workload = W, backend = "psock", call = "parLapply", ref = "W2:lapply", tasks = n),
              never_slower),
            CFG$reps, setup = function(r) ctx, run = function(ctx) parLapply(ctx$cl, X, inc),
            check = check("parLapply", n))
    measure(c(list(workload = W, backend = "psock", call = parlapply_big, ref = "W2:lapply_big",
                   tasks = big_n), never_slower),
            CFG$reps, setup = function(r) ctx, run = function(ctx) parLapply(ctx$cl, big_X, inc),
            check = check("parLapply", big_n))
  })
  if (HAVE_MIRAI) with_backend("mirai", N, list(
    list(workload = W, backend = "mirai", call = "mirai_map()[]")), function(ctx) {
    measure(list(workload = W, backend = "mirai", call = "mirai_map()[]", ref = "W2:map", tasks = n,
                 target_kind = "ratio_ge", target_value = 2, target_text = "pool_map >= 2x faster"),
            CFG$reps, setup = function(r) ctx,
            run = function(ctx) no_error_values(mirai::mirai_map(X, inc)[]), check = check("mirai_map", n))
  })
}

# ---- W3: round trip --------------------------------------------------------------------------
# The floor: roundtrip.c, a C program passing 64 bytes back and forth over
# a Unix socket pair, built with R's C compiler and run in this same run.
c_round_trip <- function() {
  dir <- tempfile("bgpool-bench-")
  dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE))
  exe <- file.path(dir, "roundtrip")
  cc <- strsplit(system2(file.path(R.home("bin"), "R"), c("CMD", "config", "CC"), stdout = TRUE), " ")[[1]]
  status <- system2(cc[1], c(cc[-1], "-O2", "-o", exe, file.path(bench_dir, "roundtrip.c")))
  if (status != 0) stop("could not build roundtrip.c with ", paste(cc, collapse = " "))
  # median, minimum (microseconds): where the scheduler puts the two
  # processes, then both on one CPU, then on two
  lapply(c("", "same", "apart"), function(placement) {
    out <- system2(exe, c(as.character(max(1000L, 10L * CFG$rt_calls)), placement), stdout = TRUE)
    suppressWarnings(as.numeric(strsplit(out, " ")[[1]]))
  })
}

w3 <- function() {
  W <- "W3 round trip"
  say("%s: median of %d calls", W, CFG$rt_calls)
  tryCatch({
    floors <- c_round_trip()
    reps <- sprintf("%d, median", max(1000L, 10L * CFG$rt_calls))
    say("  %s: C socketpair ping-pong: median %.1f us, min %.1f us; on one CPU %.1f us; on two %.1f us",
        W, floors[[1]][1], floors[[1]][2], floors[[2]][1], floors[[3]][1])
    add_row(list(workload = W, backend = "C program", call = "64-byte ping-pong, Unix socket pair",
                 ref = "W3:1", reps = reps, seconds = floors[[1]][1] / 1e6, tasks = 1,
                 target_kind = "ratio_ge", target_value = 0.5,
                 target_text = "bgpool's round trip <= 2x this floor"))
    for (k in 2:3) if (!is.na(floors[[k]][1]))
      add_row(list(workload = W, backend = "C program", ref = "W3:1", reps = reps,
                   call = sprintf("the same, %s", c("", "both on CPU 0", "on CPUs 0 and 1")[k]),
                   seconds = floors[[k]][1] / 1e6, tasks = 1))
  }, error = function(e) error_row(list(workload = W, backend = "c_floor",
                                        call = "64-byte ping-pong, Unix socket pair"), e))
  for (n in unique(c(1L, N))) {
    label <- if (n == 1L) "1 worker" else sprintf("%d workers", n)
    key <- sprintf("W3:%d", n)
    check <- function(v) {
      if (!is.list(v) || length(v) != n || !all(vapply(v, identical, NA, 2)))
        wrong("%s on %d workers: expected %d values 2", W, n, n)
    }
    spec <- list(workload = W, backend = "bgpool", call = sprintf("pool_call, %s", label), key = key)
    with_backend("bgpool", n, list(spec), function(ctx)
      measure_calls(spec, ctx, function() pool_call(inc, 1), check))
    spec <- list(workload = W, backend = "psock", call = sprintf("clusterCall, %s", label), ref = key,
                 target_kind = "ratio_ge", target_value = 4, target_text = "bgpool <= 1/4 of PSOCK's time")
    with_backend("psock", n, list(spec), function(ctx)
      measure_calls(spec, ctx, function() clusterCall(ctx$cl, inc, 1), check))
    if (HAVE_MIRAI) {
      if (n == 1L) {
        spec <- list(workload = W, backend = "mirai", call = "mirai()[], 1 daemon", ref = key)
        call <- function() list(mirai::mirai(x + 1, x = 1)[])
      } else {
        spec <- list(workload = W, backend = "mirai", call = sprintf("everywhere()[], %s", label), ref = key)
        call <- function() no_error_values(mirai::everywhere(x + 1, .args = list(x = 1))[])
      }
      with_backend("mirai", n, list(spec), function(ctx) measure_calls(spec, ctx, call, check))
    }
  }
}

# ---- W4: broadcast ---------------------------------------------------------------------------
w4 <- function() {
  W <- "W4 broadcast"
  len <- CFG$big_len
  bytes <- 8 * len
  say("%s: export a %g MB numeric vector to %d workers, then sum() it on each", W, CFG$big_mb, N)
  # A new object (and a new pool) for each repetition, with a value of its
  # own, so that nothing can be reused from an earlier one.
  new_big <- function(r) {
    assign("big", NULL, envir = globalenv())
    invisible(gc())
    assign("big", as.double(seq_len(len)) + r, envir = globalenv())
    assign("big_sum", sum(get("big", envir = globalenv())), envir = globalenv())
  }
  check <- function(what) function(res, ctx, r) {
    s <- unlist(res)
    if (!is.list(res) || length(res) != N || !is.numeric(s) || !all(s == big_sum))
      wrong("%s: expected %d sums %s, got %s", what, N, format(big_sum, digits = 15),
            paste(format(s, digits = 15), collapse = " "))
  }
  setup <- function(backend) function(r) { new_big(r); settle(); start_backend(backend, N) }
  teardown <- function(ctx) stop_backend(ctx)
  mem_target <- list(target_kind = "mem_le", target_value = 1.5,
                     target_text = "extra memory <= 1.5x object")
  measure(c(list(workload = W, backend = "bgpool", call = "pool_export + pool_evalq(sum)", key = "W4"),
            mem_target),
          CFG$reps_big, setup = setup("bgpool"),
          run = function(ctx) { pool_export("big"); pool_evalq(sum(big)) },
          check = check("pool_export"), teardown = teardown, object_bytes = bytes)
  measure(list(workload = W, backend = "psock", call = "clusterExport + clusterEvalQ(sum)", ref = "W4",
               target_kind = "ratio_ge", target_value = 10, target_text = "bgpool >= 10x faster"),
          CFG$reps_big_peer, setup = setup("psock"),
          run = function(ctx) { clusterExport(ctx$cl, "big"); clusterEvalQ(ctx$cl, sum(big)) },
          check = check("clusterExport"), teardown = teardown, budget = CFG$big_peer_budget,
          object_bytes = bytes)
  if (HAVE_MIRAI)
    measure(list(workload = W, backend = "mirai", call = "everywhere(big=) + everywhere(sum)[]", ref = "W4"),
            CFG$reps_big_peer, setup = setup("mirai"),
            run = function(ctx) {
              mirai::everywhere({}, big = big)
              no_error_values(mirai::everywhere(sum(big))[])
            }, check = check("everywhere"), teardown = teardown, budget = CFG$big_peer_budget,
            object_bytes = bytes)
  assign("big", NULL, envir = globalenv())
  invisible(gc())
}

# ---- W5: gather ----------------------------------------------------------------------------
w5 <- function() {
  W <- "W5 gather"
  n <- CFG$gather_n
  len <- CFG$gather_len
  total <- n * len * 8
  say("%s: %d tasks each returning %g MB", W, n, 8 * len / 1e6)
  check <- function(what) function(res, ctx, r) {
    ok <- is.list(res) && length(res) == n && all(vapply(seq_len(n), function(i) {
      v <- res[[i]]
      is.double(v) && length(v) == len && v[1] == i && all(v == i)
    }, NA))
    if (!ok) wrong("%s: results are not %d vectors rep(i, %g)", what, n, len)
  }
  with_backend("bgpool", N, list(list(workload = W, backend = "bgpool", call = "pool_lapply")), function(ctx)
    measure(list(workload = W, backend = "bgpool", call = "pool_lapply", key = "W5", tasks = n,
                 target_kind = "mem_le", target_value = 1.1,
                 target_text = "master holds <= 1 copy (peak growth <= 1.1x results)"),
            CFG$reps_gather, setup = function(r) ctx, run = function(ctx) pool_lapply(seq_len(n), gather_task),
            check = check("pool_lapply"), object_bytes = total))
  with_backend("psock", N, list(list(workload = W, backend = "psock", call = "parLapply")), function(ctx)
    measure(list(workload = W, backend = "psock", call = "parLapply", ref = "W5", tasks = n,
                 target_kind = "ratio_ge", target_value = 3, target_text = "bgpool >= 3x faster"),
            CFG$reps_gather, setup = function(r) ctx, run = function(ctx) parLapply(ctx$cl, seq_len(n), gather_task),
            check = check("parLapply"), object_bytes = total))
  if (HAVE_MIRAI)
    with_backend("mirai", N, list(list(workload = W, backend = "mirai", call = "mirai_map()[]")), function(ctx)
      measure(list(workload = W, backend = "mirai", call = "mirai_map()[]", ref = "W5", tasks = n,
                   target_kind = "ratio_ge", target_value = 2, target_text = "bgpool >= 2x faster"),
              CFG$reps_gather, setup = function(r) ctx,
              run = function(ctx) no_error_values(mirai::mirai_map(seq_len(n), gather_task)[]),
              check = check("mirai_map"), object_bytes = total))
}

# ---- W6: balance ---------------------------------------------------------------------------
w6 <- function() {
  W <- "W6 balance"
  n <- CFG$sleep_n
  # what one sleep really takes here: no schedule can beat n * this / N
  SLEEP_REAL <<- stats::median(vapply(1:20, function(i) {
    t0 <- now(); Sys.sleep(CFG$sleep_s); now() - t0 }, 0))
  say("%s: %d tasks of Sys.sleep(%g) on %d workers, ideal %.3f s", W, n, CFG$sleep_s, N, IDEAL_W6)
  check <- function(what) function(res, ctx, r) {
    if (!is.list(res) || !identical(unlist(res, use.names = FALSE), seq_len(n)))
      wrong("%s: results differ from 1:%d", what, n)
  }
  ideal_target <- list(target_kind = "sec_le", target_value = 1.05 * IDEAL_W6,
                       target_text = sprintf("<= %.3f s (ideal + 5%%)", 1.05 * IDEAL_W6))
  X <- seq_len(n)
  with_backend("bgpool", N, list(
    list(workload = W, backend = "bgpool", call = "pool_lapply"),
    list(workload = W, backend = "bgpool", call = "pool_map")), function(ctx) {
    measure(c(list(workload = W, backend = "bgpool", call = "pool_lapply", key = "W6:lapply", tasks = n), ideal_target),
            CFG$reps, setup = function(r) ctx, run = function(ctx) pool_lapply(X, sleep_task),
            check = check("pool_lapply"))
    measure(c(list(workload = W, backend = "bgpool", call = "pool_map", key = "W6:map", tasks = n), ideal_target),
            CFG$reps, setup = function(r) ctx, run = function(ctx) pool_map(sleep_task, X),
            check = check("pool_map"))
  })
  with_backend("psock", N, list(
    list(workload = W, backend = "psock", call = "parLapply"),
    list(workload = W, backend = "psock", call = "clusterMap")), function(ctx) {
    measure(list(workload = W, backend = "psock", call = "parLapply", ref = "W6:lapply", tasks = n),
            CFG$reps, setup = function(r) ctx, run = function(ctx) parLapply(ctx$cl, X, sleep_task),
            check = check("parLapply"))
    measure(list(workload = W, backend = "psock", call = "clusterMap", ref = "W6:map", tasks = n),
            CFG$reps, setup = function(r) ctx, run = function(ctx) clusterMap(ctx$cl, sleep_task, X),
            check = check("clusterMap"))
  })
  if (HAVE_MIRAI) with_backend("mirai", N, list(
    list(workload = W, backend = "mirai", call = "mirai_map()[]")), function(ctx)
    measure(list(workload = W, backend = "mirai", call = "mirai_map()[]", ref = "W6:map", tasks = n),
            CFG$reps, setup = function(r) ctx,
            run = function(ctx) no_error_values(mirai::mirai_map(X, sleep_task)[]),
            check = check("mirai_map")))
}

# ---- W7: cluster interface --------------------------------------------------------------------
# parallel's own functions on pool_cluster(), on a PSOCK cluster and on
# mirai's make_cluster(): the same calls, only the cluster object differs.
w7 <- function() {
  W <- "W7 cluster interface"
  len <- CFG$export_mb * 1e6 / 8
  say("%s: parallel's functions on pool_cluster(), PSOCK%s", W, if (HAVE_MIRAI) " and make_cluster()" else "")
  check_inc <- function(what, n) function(res, ctx, r) {
    if (!is.list(res) || length(res) != n || !identical(unlist(res, use.names = FALSE), seq_len(n) + 1))
      wrong("%s over %d tiny tasks: results differ from (1:n) + 1", what, n)
  }
  check_call <- function(v) {
    if (!is.list(v) || length(v) != N || !all(vapply(v, identical, NA, 2)))
      wrong("clusterCall on %d nodes: expected %d values 2", N, N)
  }
  # A fresh `x` with a value of its own for each repetition (made outside
  # the timed region); each node's sum(x) is checked against the master's.
  x_sum <- NA_real_
  new_x <- function(ctx) function(r) {
    assign("x", as.double(seq_len(len)) + r, envir = globalenv())
    x_sum <<- sum(get("x", envir = globalenv()))
    ctx
  }
  sum_x <- as_task(function() sum(x))
  check_export <- function(res, ctx, r) {
    s <- unlist(clusterCall(ctx$cl, sum_x))
    if (length(s) != N || !is.numeric(s) || !all(s == x_sum))
      wrong("clusterExport: expected %d sums %s, got %s", N, format(x_sum, digits = 15),
            paste(format(s, digits = 15), collapse = " "))
  }
  cases <- list(
    list(call = sprintf("parLapply, %s tasks", format(CFG$tiny_n, big.mark = ",")), key = "W7:parLapply",
         tasks = CFG$tiny_n, run = function(cl) parLapply(cl, seq_len(CFG$tiny_n), inc),
         check = check_inc("parLapply", CFG$tiny_n)),
    list(call = sprintf("clusterApplyLB, %d tasks", CFG$lb_n), key = "W7:LB",
         tasks = CFG$lb_n, run = function(cl) clusterApplyLB(cl, seq_len(CFG$lb_n), inc),
         check = check_inc("clusterApplyLB", CFG$lb_n)),
    list(call = "clusterCall(cl, inc, 1)", key = "W7:call"),
    list(call = sprintf("clusterExport of %g MB", CFG$export_mb), key = "W7:export",
         run = function(cl) clusterExport(cl, "x"), check = check_export, setup = new_x, bytes = 8 * len))
  never_slower <- list(target_kind = "ratio_ge", target_value = 1, target_text = "bgpool never slower (>= 1x)")
  for (b in c("bgpool_cluster", "psock", if (HAVE_MIRAI) "mirai_cluster")) {
    specs <- lapply(cases, function(k) c(
      list(workload = W, backend = b, call = k$call), if (!is.null(k$tasks)) list(tasks = k$tasks),
      if (b == "bgpool_cluster") list(key = k$key) else list(ref = k$key),
      if (b == "psock") never_slower))
    with_backend(b, N, specs, function(ctx) for (i in seq_along(cases)) {
      k <- cases[[i]]
      if (is.null(k$run)) {
        measure_calls(specs[[i]], ctx, function() clusterCall(ctx$cl, inc, 1), check_call)
      } else {
        setup <- if (is.null(k$setup)) function(r) ctx else k$setup(ctx)
        measure(specs[[i]], CFG$reps, setup = setup, run = function(ctx) k$run(ctx$cl), check = k$check,
                object_bytes = if (is.null(k$bytes)) NA else k$bytes)
      }
    })
  }
  assign("x", NULL, envir = globalenv())
  invisible(gc())
}

# ---- run ---------------------------------------------------------------------------------------
machine_line <- function() {
  cpu <- tryCatch(sub(".*:\\s*", "", grep("^model name", readLines("/proc/cpuinfo"), value = TRUE)[1]),
                  error = function(e) NA)
  ram <- proc_kb("/proc/meminfo", "MemTotal")[[1]] / 1024^2
  sprintf("%d cores (%s), %.1f GiB RAM, Linux %s", parallel::detectCores(), cpu, ram,
          Sys.info()[["release"]])
}
loadavg <- function() tryCatch(paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = " "),
                               error = function(e) "?")
git_line <- function() {
  root <- normalizePath(file.path(bench_dir, "..", ".."), mustWork = FALSE)
  if (!nzchar(Sys.which("git")) || !dir.exists(file.path(root, ".git"))) return("")
  head <- suppressWarnings(tryCatch(system2("git", c("-C", shQuote(root), "rev-parse", "--short", "HEAD"),
                                            stdout = TRUE, stderr = FALSE), error = function(e) character()))
  if (!length(head)) return("")
  dirty <- suppressWarnings(tryCatch(system2("git", c("-C", shQuote(root), "status", "--porcelain", "--",
                                                      "R", "src", "DESCRIPTION", "NAMESPACE"),
                                             stdout = TRUE, stderr = FALSE), error = function(e) character()))
  sprintf(", source tree at commit %s%s", head[1], if (length(dirty)) " with uncommitted changes in R/ or src/" else "")
}
load_start <- loadavg()

say("bgpool benchmark: %d workers%s; %s", N, if (QUICK) " (quick)" else "", machine_line())
if (!is.null(mirai_note)) say("%s", mirai_note)
tryCatch({
  cleanup_all()
  w1(); cleanup_all()
  w2(); cleanup_all()
  w3(); cleanup_all()
  w4(); cleanup_all()
  w5(); cleanup_all()
  w6(); cleanup_all()
  w7(); cleanup_all()
}, finally = cleanup_all())
load_end <- loadavg()
run_minutes <- (as.numeric(Sys.time()) - as.numeric(run_started)) / 60

# ---- table -------------------------------------------------------------------------------------------
keys <- vapply(ROWS, function(r) r$key, "")
seconds_of <- function(key) {
  hit <- which(keys == key)
  if (length(hit)) ROWS[[hit[1]]]$seconds else NA_real_
}
fmt_num <- function(x, digits = 3) {
  if (is.na(x)) return("—")
  if (x == 0) return("0")
  if (abs(x) >= 100) return(formatC(x, format = "f", digits = 0, big.mark = ","))
  trimws(formatC(signif(x, digits), format = "fg", digits = digits))
}
fmt_ratio <- function(x) if (is.na(x)) "—" else if (x >= 10) sprintf("%.0fx", x) else sprintf("%.2gx", x)

table_rows <- lapply(ROWS, function(r) {
  ratio <- if (!is.na(r$ref)) r$seconds / seconds_of(r$ref) else if (nzchar(r$key) && !is.na(r$seconds)) 1 else NA
  us <- if (!is.na(r$tasks)) 1e6 * r$seconds / r$tasks else NA
  metric <- NA_real_
  metric_text <- ""
  if (identical(r$target_kind, "mem_le") && !is.null(r$mem)) {
    metric <- if (r$key == "W4") r$mem[["extra_pss"]] / r$mem[["object"]] else r$mem[["master_growth"]] / r$mem[["object"]]
    metric_text <- sprintf(" (got %.2fx)", metric)
  }
  met <- if (is.na(r$target_kind)) "" else if (!is.na(r$error)) "ERROR" else {
    value <- switch(r$target_kind, ratio_ge = ratio, us_le = us, sec_le = r$seconds, mem_le = metric)
    ok <- switch(r$target_kind, ratio_ge = value >= r$target_value, value <= r$target_value)
    if (is.na(ok)) "?" else if (ok) "yes" else "NO"
  }
  c(workload = r$workload, backend = r$backend, call = r$call, reps = r$reps,
    seconds = if (!is.na(r$error)) "ERROR" else fmt_num(r$seconds, 3),
    us_per_task = fmt_num(us, 3),
    master_peak_MB = if (is.na(r$master_peak)) "—" else sprintf("%.0f", MB(r$master_peak)),
    workers_peak_MB = if (is.na(r$workers_peak)) "—" else sprintf("%.0f", MB(r$workers_peak)),
    workers_pss_MB = if (is.na(r$workers_pss)) "—" else sprintf("%.0f", MB(r$workers_pss)),
    peer_over_bgpool = if (!is.na(r$ref)) fmt_ratio(ratio) else if (is.na(ratio)) "—" else "1",
    target = paste0(r$target_text, metric_text), met = met)
})
tab <- do.call(rbind, table_rows)
headers <- c("workload", "backend", "call", "reps", "seconds", "µs/task", "master peak MB",
             "workers peak MB (sum)", "workers Pss MB (sum)", "peer / bgpool", "target", "met")

mem_rows <- Filter(function(r) !is.null(r$mem) && !is.na(r$mem[["object"]]), ROWS)
mem_tab <- if (length(mem_rows)) do.call(rbind, lapply(mem_rows, function(r) {
  m <- r$mem
  x <- function(v) sprintf("%.0f (%.2fx)", MB(v), v / m[["object"]])
  c(workload = r$workload, backend = r$backend, call = r$call,
    size = sprintf("%.0f", MB(m[["object"]])),
    extra_rss = x(m[["extra_rss"]]), extra_pss = x(m[["extra_pss"]]),
    peak_growth = x(m[["peak_growth"]]), master_growth = x(m[["master_growth"]]),
    shmem = sprintf("%.0f", MB(m[["shmem"]])))
})) else NULL
mem_headers <- c("workload", "backend", "call", "object or results MB",
                 "Σ extra VmRSS MB (x size)", "Σ extra Pss MB (x size)",
                 "Σ peak growth MB (x size)", "master peak growth MB (x size)", "system Shmem Δ MB")

notes <- c(
  sprintf("Times are the minimum over the repetitions in `reps` (W3: the median of single calls, after 10 warm-up calls), in seconds; µs/task = seconds / tasks (W3: per call, all workers answering); `peer / bgpool` = the peer's time / bgpool's time for the same work, so > 1 means bgpool is faster (its bgpool reference is the row above with the same call kind: pool_map for clusterMap and mirai_map, pool_lapply for parLapply; in W7 the pool_cluster() row with the same call)."),
  "Memory comes from /proc/<pid>/status and smaps_rollup of the master and every worker, helper processes included (the master's live children, such as a process that forks the workers): peaks are VmHWM after a reset (\"5\" written to clear_refs) just before each repetition, taken as the largest over the repetitions; they are absolute, so they include each R process's own footprint (W1: what the started workers use). VmHWM counts a page shared by several processes (forked workers share their parent's pages until written) once in each; `workers Pss MB` (at the end of the repetition) divides it among them.",
  "W1: from nothing to every worker answering once (init_pool + pool_call; makeCluster + clusterCall; mirai daemons + everywhere(.min = N)[]); each repetition starts from no pool and waits for the workers to be gone afterwards.",
  sprintf("W2: %s calls of function(x) x + 1 on a running pool (and %s for pool_lapply against parLapply). parLapply splits the input in one chunk per worker up front; clusterMap sends one task per call.", format(CFG$tiny_n, big.mark = ","), format(CFG$tiny_big_n, big.mark = ",")),
  "W3: pool_call(function(x) x + 1, 1) on a pool of 1 worker and of N workers, against clusterCall and mirai (mirai()[] on 1 daemon, everywhere()[] on N); the C program row is the floor of a round trip here (inst/bench/roundtrip.c: 64 bytes back and forth between two processes over a Unix socket pair, the median of many), built and run in this same run, where the scheduler puts the processes, then pinned to one CPU and to two: waking a process whose CPU went idle costs more than the rest of the round trip, so the floor depends on where the two run.",
  sprintf("W4: a fresh pool (or cluster, or daemons) and a fresh %g MB vector with a value of its own for each repetition; timed: the export and then sum(big) on every worker, checked against the master's sum. Extra memory = sum over master and workers of (after - before), with the master's object already in `before`. The memory target is judged on Pss (VmRSS counts a page shared by k processes k times; Pss counts 1/k in each, so the sum of Pss is the real extra memory); VmRSS is shown too. PSOCK and mirai take %d repetition(s)%s because each takes tens of seconds at 10 workers.",
          CFG$big_mb, CFG$reps_big_peer, if (is.finite(CFG$big_peer_budget) && CFG$big_peer_budget > 0) sprintf(" (no further one after %g s)", CFG$big_peer_budget) else ""),
  sprintf("W5: %d tasks each returning rep(i, %g) as doubles (%g MB each, %g MB in all), every value checked. The bgpool target is the master's peak RSS growth / total result size: 1.0 means one copy of each result (10%% allowed for buffers).", CFG$gather_n, CFG$gather_len, 8 * CFG$gather_len / 1e6, CFG$gather_n * 8 * CFG$gather_len / 1e6),
  sprintf("W6: %d tasks of Sys.sleep(%g) returning their index; ideal %g x %g / %d = %.3f s. One Sys.sleep(%g) takes %.2f ms in the master here (median of 20), so even a perfect schedule needs %.3f s.", CFG$sleep_n, CFG$sleep_s, CFG$sleep_n, CFG$sleep_s, N, IDEAL_W6, CFG$sleep_s, 1e3 * SLEEP_REAL, CFG$sleep_n * SLEEP_REAL / N),
  sprintf("W7: parallel's own functions on bgpool's pool_cluster(), on makeCluster(%d) and on mirai's make_cluster(%d): parLapply of function(x) x + 1 over 1:%d; clusterApplyLB of it over 1:%d (one task per message, to the first free node); clusterCall(cl, function(x) x + 1, 1) on every node, the median of %d calls as in W3; clusterExport of a fresh %g MB double vector, with a value of its own for each repetition, checked by sum() on every node outside the timed region. Target: bgpool's cluster never slower than PSOCK (ratio >= 1) in each.", N, N, CFG$tiny_n, CFG$lb_n, CFG$rt_calls, CFG$export_mb),
  if (QUICK) "Quick run: smaller objects, fewer tasks and repetitions than the full run; the targets are stated for the full sizes." else NULL,
  mirai_note,
  sprintf("Load average (1, 5, 15 min) at start %s, at end %s: the machine is shared, so minimums are reported.", load_start, load_end)
)

# console
print_table <- function(m, headers) {
  m <- rbind(headers, m)
  w <- apply(m, 2, function(col) max(nchar(col, type = "width")))
  for (i in seq_len(nrow(m))) {
    cells <- vapply(seq_len(ncol(m)), function(j) formatC(m[i, j], width = -w[j]), "")
    cat(paste(cells, collapse = "  "), "\n", sep = "")
    if (i == 1L) cat(paste(strrep("-", w), collapse = "  "), "\n", sep = "")
  }
}
cat("\n")
cat(sprintf("bgpool benchmark, %d workers%s (%s)\n\n", N, if (QUICK) ", quick" else "", command_line))
print_table(tab, headers)
if (!is.null(mem_tab)) {
  cat("\nMemory of the large-data workloads (largest over repetitions):\n\n")
  print_table(mem_tab, mem_headers)
}
if (length(ERRORS)) cat("\nErrors:\n", paste0("- ", ERRORS, "\n"), sep = "")
cat("\nNotes:\n", paste0("- ", notes, "\n"), sep = "")

# markdown
md_cell <- function(x) gsub("|", "\\|", x, fixed = TRUE)
md_table <- function(m, headers) {
  c(paste0("| ", paste(headers, collapse = " | "), " |"),
    paste0("|", paste(rep("---", length(headers)), collapse = "|"), "|"),
    apply(m, 1, function(row) paste0("| ", paste(md_cell(row), collapse = " | "), " |")))
}
bg_version <- sprintf("%s (installed %s)", utils::packageVersion("bgpool"),
                      sub(";.*$", "", sub("^[^;]*; *[^;]*; *", "", utils::packageDescription("bgpool")$Built)))
md <- c(
  sprintf("# bgpool benchmark: %d workers%s", N, if (QUICK) " (quick)" else ""),
  "",
  sprintf("Generated by `%s` on %s in %.1f minutes. This file is regenerated by that command; do not edit it by hand.",
          command_line, format(run_started, "%Y-%m-%d %H:%M %Z"), run_minutes),
  "",
  "| | |", "|---|---|",
  sprintf("| machine | %s |", machine_line()),
  sprintf("| R | %s |", R.version$version.string),
  sprintf("| bgpool | %s%s |", bg_version, git_line()),
  sprintf("| peers | parallel %s (PSOCK, as AzureRMR uses it); %s |", utils::packageVersion("parallel"),
          if (HAVE_MIRAI) sprintf("mirai %s (nanonext %s), without its dispatcher (its fastest)", mirai_version, utils::packageVersion("nanonext")) else "mirai not used"),
  sprintf("| sizes | %d workers; W2 %s and %s tasks; W3 %d calls; W4 %g MB; W5 %d x %g MB; W6 %d x %g s; W7 %s, %d tasks, %d calls, %g MB |",
          N, format(CFG$tiny_n, big.mark = ","), format(CFG$tiny_big_n, big.mark = ","), CFG$rt_calls, CFG$big_mb, CFG$gather_n, 8 * CFG$gather_len / 1e6,
          CFG$sleep_n, CFG$sleep_s, format(CFG$tiny_n, big.mark = ","), CFG$lb_n, CFG$rt_calls, CFG$export_mb),
  sprintf("| repetitions | W1 %d; W2, W6, W7 %d; W4 bgpool %d, peers %d; W5 %d |", CFG$reps_start, CFG$reps,
          CFG$reps_big, CFG$reps_big_peer, CFG$reps_gather),
  "",
  "## Results",
  "",
  md_table(tab, headers),
  "",
  if (!is.null(mem_tab)) c("## Memory of the large-data workloads", "", "Largest over the repetitions; `x size` is relative to the object (W4, W7 clusterExport) or to all results together (W5).", "", md_table(mem_tab, mem_headers), "") else NULL,
  if (length(ERRORS)) c("## Errors", "", paste0("- ", md_cell(ERRORS)), "") else NULL,
  "## Notes",
  "",
  paste0("- ", notes),
  ""
)
dir.create(dirname(out_file), showWarnings = FALSE, recursive = TRUE)
writeLines(md, out_file, useBytes = FALSE)
# the rows as data, for the README's headline table (.ci/readme-bench.R)
csv <- do.call(rbind, lapply(seq_along(ROWS), function(i) {
  r <- ROWS[[i]]
  data.frame(workload = r$workload, backend = r$backend, call = r$call, key = r$key,
             ref = if (is.na(r$ref)) "" else r$ref, seconds = r$seconds,
             ratio = if (is.na(r$ref)) NA_real_ else r$seconds / seconds_of(r$ref),
             target = r$target_text, met = table_rows[[i]][["met"]])
}))
utils::write.csv(csv, sub("\\.md$", ".csv", out_file), row.names = FALSE)
cat(sprintf("\nWrote %s (%.1f minutes)\n", out_file, run_minutes))
if (length(ERRORS)) quit(status = 1)
