# 10,000 tiny tasks through bgpool and through AzureRMR's path (a parallel
# PSOCK cluster) of the same size, in one run. Prints the best of `reps`.
# Usage: Rscript inst/bench/tiny_tasks.R [size] [reps]
library(bgpool)
args <- commandArgs(trailingOnly = TRUE)
size <- if (length(args) >= 1) as.integer(args[1]) else 10L
reps <- if (length(args) >= 2) as.integer(args[2]) else 5L
n <- 10000L
f <- function(x) x + 1

best <- function(run) {
  times <- vapply(seq_len(reps), function(i) {
    started <- proc.time()[["elapsed"]]
    result <- run()
    elapsed <- proc.time()[["elapsed"]] - started
    stopifnot(identical(unlist(result), as.numeric(2:(n + 1))))
    elapsed
  }, 0)
  min(times)
}

suppressMessages(init_pool(size))
cl <- parallel::makeCluster(size)
rows <- data.frame(
  call = c("pool_map", "pool_lapply"),
  bgpool = c(best(function() pool_map(f, 1:n)), best(function() pool_lapply(1:n, f))),
  psock = c(best(function() parallel::clusterMap(cl, f, 1:n)),
            best(function() parallel::parLapply(cl, 1:n, f)))
)
parallel::stopCluster(cl)
suppressMessages(delete_pool())
rows$psock_over_bgpool <- round(rows$psock / rows$bgpool, 1)
rows$bgpool_us_per_task <- round(1e6 * rows$bgpool / n, 1)
cat(sprintf("%d tiny tasks, %d workers, best of %d (seconds):\n", n, size, reps))
print(rows, row.names = FALSE)
