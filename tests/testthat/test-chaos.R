# The randomized fault test: trials of random calls with random faults in
# combination (workers killed, segfaulting or quitting mid-task, tasks past
# their time limit, .retry 0 to 2, Ctrl-C in the master, a failing then a
# good export of shared memory, calls through the pool's cluster), each
# checked against the promise and for leaks (chaos-master.R).
#
# 200 trials by default, with a fixed seed that is printed; set
# BGPOOL_CHAOS_SEED to choose another, BGPOOL_CHAOS_TRIALS for a number of
# trials, BGPOOL_CHAOS=long for 5,000, and BGPOOL_CHAOS_TRIAL=k to replay
# trial k alone (its line in a failure report gives k and the seed).

chaos_plan <- function() {
  seed <- as.integer(Sys.getenv("BGPOOL_CHAOS_SEED", "20261129"))
  one <- Sys.getenv("BGPOOL_CHAOS_TRIAL", "")
  trials <- if (nzchar(one)) as.integer(one) else {
    count <- if (identical(Sys.getenv("BGPOOL_CHAOS"), "long")) 5000L
             else as.integer(Sys.getenv("BGPOOL_CHAOS_TRIALS", "200"))
    seq_len(count)
  }
  list(seed = seed, trials = trials)
}

test_that("random faults in combination never give a wrong answer, and leave nothing behind", {
  # minutes of child processes: make test runs it (NOT_CRAN=true), CRAN not
  skip_on_cran()
  skip_without_processx()
  skip_on_psock("the faults and leak checks here are the native core's (its template, shared segments, cancel signals)")
  plan <- chaos_plan()
  master <- normalizePath("chaos-master.R")
  message(sprintf("\nchaos: %d trials, seed %d (BGPOOL_CHAOS_SEED=%d replays them)",
                  length(plan$trials), plan$seed, plan$seed))
  batches <- split(plan$trials, ceiling(seq_along(plan$trials) / 25L))
  rows <- list()
  for (batch in batches) {
    child <- local_r_child(bquote({
      segment_pattern <- .(segment_pattern)
      source(.(master))
      save_result(run_chaos(.(plan$seed), .(batch)))
    }))
    rows[[length(rows) + 1L]] <- child_result(child, 60 + 20 * length(batch))
  }
  results <- do.call(rbind, rows)
  failed <- results[nzchar(results$problems), ]
  report <- sprintf("trial %d (BGPOOL_CHAOS_SEED=%d BGPOOL_CHAOS_TRIAL=%d): %s -> %s: %s",
                    failed$trial, plan$seed, failed$trial, failed$faults, failed$outcome,
                    failed$problems)
  expect_identical(nrow(results), length(plan$trials))
  expect_identical(nrow(failed), 0L, info = paste(report, collapse = "\n"))
  outcomes <- table(sub(" .*", "", results$outcome))
  message(sprintf("chaos: %d trials in %.0f s: %s", nrow(results), sum(results$seconds),
                  paste(names(outcomes), outcomes, sep = " ", collapse = ", ")))
  # the trials did make faults happen, and the calls did both succeed and fail
  if (length(plan$trials) >= 50) expect_true(all(c("value", "error") %in% names(outcomes)))
})
