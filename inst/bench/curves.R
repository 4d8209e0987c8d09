# Two curves, bgpool against a `parallel` PSOCK cluster and mirai (when
# installed, without its dispatcher), in one run:
#   curve-workers.png  time per task of 10,000 tiny tasks (function(x) x + 1)
#                      against the number of workers: 1, 2, 4, 8, 16, 32
#                      (pool_lapply, parLapply, mirai_map)
#   curve-gather.png   time to gather results against their total size,
#                      1 KB to 1 GB, from 2 workers each returning half
#                      (pool_lapply, parLapply, mirai_map)
# and curves.md with the numbers. Each point is the minimum of 3 runs, each
# result checked.
#
# Usage: Rscript inst/bench/curves.R [--quick]   (--quick: fewer, smaller points)

options(warn = 1)
quick <- "--quick" %in% commandArgs(trailingOnly = TRUE)
script_file <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])
bench_dir <- if (is.na(script_file)) file.path("inst", "bench") else dirname(normalizePath(script_file))
Sys.unsetenv("_R_CHECK_LIMIT_CORES_")  # a benchmark, not a check: 32 workers

suppressPackageStartupMessages(library(bgpool))
library(parallel)
have_mirai <- requireNamespace("mirai", quietly = TRUE) && utils::packageVersion("mirai") >= "2.0.0"
say <- function(...) message(sprintf(...))

sizes <- if (quick) c(1, 2, 4) else c(1, 2, 4, 8, 16, 32)
payloads <- if (quick) 10^c(3, 5, 7) else 10^(3:9)
tasks <- if (quick) 2000L else 10000L
reps <- if (quick) 2L else 3L

inc <- function(x) x + 1
environment(inc) <- globalenv()
fill <- function(i, len) rep(as.double(i), len)
environment(fill) <- globalenv()

# The backends, each started with n workers, giving a function that runs
# lapply-like work on them.
start <- list(
  bgpool = function(n) {
    suppressMessages(init_pool(n, restart = TRUE))
    list(run = function(X, f, ...) pool_lapply(X, f, ...), stop = function() suppressMessages(delete_pool()))
  },
  PSOCK = function(n) {
    cl <- makeCluster(n)
    list(run = function(X, f, ...) parLapply(cl, X, f, ...), stop = function() stopCluster(cl))
  },
  mirai = function(n) {
    mirai::daemons(n, dispatcher = FALSE)
    list(run = function(X, f, ...) mirai::mirai_map(X, f, .args = list(...))[],
         stop = function() mirai::daemons(0))
  })
if (!have_mirai) start$mirai <- NULL

fastest <- function(run, check) {
  best <- Inf
  for (r in seq_len(reps)) {
    invisible(gc())
    t0 <- Sys.time()
    res <- run()
    best <- min(best, as.numeric(Sys.time() - t0, units = "secs"))
    if (!check(res)) stop("WRONG RESULT")
    rm(res)
  }
  best
}

rows <- list()
for (backend in names(start)) {
  for (n in sizes) {
    say("workers: %s, %d workers", backend, n)
    b <- start[[backend]](n)
    X <- seq_len(tasks)
    secs <- fastest(function() b$run(X, inc),
                    function(res) identical(unlist(res, use.names = FALSE), X + 1))
    b$stop()
    rows[[length(rows) + 1L]] <- data.frame(curve = "workers", backend = backend, x = n,
                                            seconds = secs, per = 1e6 * secs / tasks)
  }
  b <- start[[backend]](2L)
  for (p in payloads) {
    say("gather: %s, %g bytes", backend, p)
    len <- max(1L, as.integer(p / 16))  # two results of doubles
    secs <- fastest(function() b$run(1:2, fill, len = len),
                    function(res) length(res) == 2L && all(vapply(1:2, function(i)
                      length(res[[i]]) == len && all(res[[i]] == i), NA)))
    rows[[length(rows) + 1L]] <- data.frame(curve = "gather", backend = backend, x = p,
                                            seconds = secs, per = NA)
  }
  b$stop()
}
results <- do.call(rbind, rows)

colours <- c(bgpool = "#1b7837", PSOCK = "#762a83", mirai = "#e08214")
plot_curve <- function(file, data, y, xlab, ylab, main) {
  png(file, width = 900, height = 600, res = 110)
  on.exit(dev.off())
  backends <- unique(data$backend)
  plot(data$x, data[[y]], log = "xy", type = "n", xlab = xlab, ylab = ylab, main = main,
       xaxt = "n")
  axis(1, at = unique(data$x), labels = format(unique(data$x), scientific = FALSE, big.mark = ","))
  grid()
  for (b in backends) {
    d <- data[data$backend == b, ]
    lines(d$x, d[[y]], type = "b", pch = 19, lwd = 2, col = colours[[b]])
  }
  legend("topleft", legend = backends, col = colours[backends], lwd = 2, pch = 19, bty = "n")
}
machine <- sprintf("%d cores, R %s, %s", parallel::detectCores(), getRversion(), format(Sys.Date()))
suffix <- if (quick) "-quick" else ""
plot_curve(file.path(bench_dir, sprintf("curve-workers%s.png", suffix)),
           results[results$curve == "workers", ], "per",
           "workers", "microseconds per task (log)",
           sprintf("%s tiny tasks: time per task against workers (%s)", format(tasks, big.mark = ","), machine))
plot_curve(file.path(bench_dir, sprintf("curve-gather%s.png", suffix)),
           results[results$curve == "gather", ], "seconds",
           "bytes gathered from 2 workers", "seconds (log)",
           sprintf("Gathering results: time against their size (%s)", machine))

fmt <- function(d, col) {
  wide <- reshape(d[, c("backend", "x", col)], idvar = "x", timevar = "backend", direction = "wide")
  names(wide) <- sub(paste0("^", col, "\\."), "", names(wide))
  wide
}
md_table <- function(d) {
  c(paste0("| ", paste(names(d), collapse = " | "), " |"),
    paste0("|", paste(rep("---", ncol(d)), collapse = "|"), "|"),
    apply(d, 1, function(r) paste0("| ", paste(trimws(format(r)), collapse = " | "), " |")))
}
w <- fmt(results[results$curve == "workers", ], "per")
g <- fmt(results[results$curve == "gather", ], "seconds")
writeLines(c(
  "# bgpool curves",
  "",
  sprintf("Generated by `Rscript inst/bench/curves.R%s` (%s); each point the minimum of %d runs.",
          if (quick) " --quick" else "", machine, reps),
  "",
  sprintf("## Microseconds per task, %s tiny tasks, against workers", format(tasks, big.mark = ",")),
  "",
  md_table(data.frame(workers = w$x, signif(w[, -1, drop = FALSE], 3))),
  "",
  "## Seconds to gather results from 2 workers, against their total size in bytes",
  "",
  md_table(data.frame(bytes = format(g$x, scientific = FALSE, big.mark = ","),
                      signif(g[, -1, drop = FALSE], 3))),
  ""), file.path(bench_dir, sprintf("curves%s.md", suffix)))
say("wrote curve-workers%s.png, curve-gather%s.png and curves%s.md in %s", suffix, suffix, suffix, bench_dir)
