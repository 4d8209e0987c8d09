# Progress bars (.progress): cli's bar, shown or not as asked, counting the
# elements as their results arrive.

# Runs `code` in a new R session, interactive or not, and returns the list
# it passes to save_result(). In that session cli's timer ticks every 20 ms
# (outside interactive sessions it ticks every 3 s, from when cli is loaded)
# and bars show at once, so that a short call shows its bar; bar_text(expr)
# evaluates expr and returns what it printed, a bar included.
progress_child <- function(code, interactive = FALSE) {
  skip_if_not_installed("processx")
  script <- withr::local_tempfile(fileext = ".R")
  result <- withr::local_tempfile(fileext = ".rds")
  writeLines(c(
    "suppressPackageStartupMessages(library(bgpool))",
    "options(cli.progress_show_after = 0, cli.dynamic = FALSE)",
    sprintf("save_result <- function(x) saveRDS(x, %s)", deparse(result)),
    "bar_text <- function(expr) {",
    "  file <- tempfile()",
    "  con <- file(file, 'w')",
    "  sink(con)",
    "  sink(con, type = 'message')",
    "  tryCatch(expr, finally = { sink(type = 'message'); sink(); close(con) })",
    "  paste(readLines(file), collapse = '\\n')",
    "}",
    deparse(code, width.cutoff = 500L)
  ), script)
  # R reads an interactive session's code from its standard input
  args <- c("--no-echo", "--no-save", "--no-restore",
            if (interactive) "--interactive" else c("-f", script))
  out <- processx::run(
    file.path(R.home("bin"), "R"), args, stdin = if (interactive) script,
    env = c("current", R_LIBS = paste(.libPaths(), collapse = .Platform$path.sep),
            CLI_TICK_TIME = "20"),
    error_on_status = FALSE, stderr_to_stdout = TRUE, timeout = 60)
  if (!file.exists(result))
    stop("the child R session saved no result. Its output:\n", out$stdout, call. = FALSE)
  readRDS(result)
}

# The counts "done/total" that the bar showed, in order.
bar_counts <- function(text, total) {
  found <- regmatches(text, gregexpr(sprintf("[0-9]+/%d [|] ETA", total), text))[[1L]]
  as.integer(sub("/.*", "", found))
}

test_that(".progress = TRUE shows cli's bar, counting up to the number of elements", {
  res <- progress_child(quote({
    init_pool(2)
    slow <- function(x) {
      Sys.sleep(0.04)
      x
    }
    flag <- tempfile()
    kill_once <- function(i, flag) {
      if (i == 5L && !file.exists(flag)) {
        file.create(flag)
        tools::pskill(Sys.getpid(), tools::SIGKILL)
        Sys.sleep(10)
      }
      Sys.sleep(0.04)
      i
    }
    out <- list()
    out$map <- bar_text(r1 <- pool_map(slow, 1:20, .progress = TRUE))
    out$sapply <- bar_text(r2 <- pool_sapply(1:12, slow, .progress = TRUE))
    out$option <- bar_text(r3 <- withr::with_options(list(bgpool.progress = TRUE),
                                                     pool_lapply(1:20, slow)))
    out$false <- bar_text(r4 <- pool_map(slow, 1:20, .progress = FALSE))
    out$null <- bar_text(r5 <- pool_map(slow, 1:20))
    out$retry <- bar_text(r6 <- pool_lapply(1:20, kill_once, flag = flag, .retry = 1,
                                            .progress = TRUE))
    out$results <- list(r1, r2, r3, r4, r5, r6)
    out$killed <- file.exists(flag)
    delete_pool()
    save_result(out)
  }))
  expect_match(res$map, "pool_map() ", fixed = TRUE)
  map_counts <- bar_counts(res$map, 20L)
  expect_gt(length(map_counts), 1L)
  expect_false(is.unsorted(map_counts))
  expect_identical(map_counts[length(map_counts)], 20L)
  expect_match(res$sapply, "pool_sapply() ", fixed = TRUE)
  expect_identical(max(bar_counts(res$sapply, 12L)), 12L)
  expect_match(res$option, "pool_lapply() ", fixed = TRUE)
  expect_identical(max(bar_counts(res$option, 20L)), 20L)
  # outside interactive sessions NULL shows none, FALSE never
  expect_identical(res$false, "")
  expect_identical(res$null, "")
  # a re-run after a worker died goes on with the same bar
  expect_true(res$killed)
  retry_counts <- bar_counts(res$retry, 20L)
  expect_false(is.unsorted(retry_counts))
  expect_identical(retry_counts[length(retry_counts)], 20L)
  # every line shown is of that bar, with the call's total
  expect_identical(lengths(gregexpr("pool_lapply() ", res$retry, fixed = TRUE)),
                   length(retry_counts))
  expect_identical(res$results, list(as.list(1:20), 1:12, as.list(1:20), as.list(1:20),
                                     as.list(1:20), as.list(1:20)))
})

test_that("by default a bar shows in interactive sessions, but not while knitting", {
  res <- progress_child(quote({
    init_pool(2)
    slow <- function(x) {
      Sys.sleep(0.04)
      x
    }
    out <- list(interactive = interactive())
    out$null <- bar_text(pool_map(slow, 1:20))
    out$false <- bar_text(pool_map(slow, 1:20, .progress = FALSE))
    out$knitting <- bar_text(withr::with_options(list(knitr.in.progress = TRUE),
                                                 pool_map(slow, 1:20)))
    out$knitting_true <- bar_text(withr::with_options(list(knitr.in.progress = TRUE),
                                                      pool_map(slow, 1:20, .progress = TRUE)))
    delete_pool()
    save_result(out)
  }), interactive = TRUE)
  expect_true(res$interactive)
  expect_identical(max(bar_counts(res$null, 20L)), 20L)
  expect_identical(res$false, "")
  expect_identical(res$knitting, "")
  expect_identical(max(bar_counts(res$knitting_true, 20L)), 20L)
})

test_that("a call that fails or is stopped leaves no bar behind, and the next call works", {
  local_pool()
  # cli's registry of the bars still running
  bars <- function() length(cli:::clienv$progress)
  before <- bars()
  fails <- global_fun(function(x) if (x == 7) stop("seven") else x)
  expect_error(pool_map(fails, 1:20, .progress = TRUE), class = "bgpool_task_error")
  expect_identical(bars(), before)
  dies <- global_fun(function(x) if (x == 2) tools::pskill(Sys.getpid(), tools::SIGKILL) else x)
  expect_error(pool_lapply(1:4, dies, chunk.size = 1, .progress = TRUE),
               class = "bgpool_worker_died")
  expect_identical(bars(), before)
  # (the lost worker replaced first, so that the time limit below falls in
  # the call's wait, not in a replacement's start)
  expect_identical(pool_sapply(1:2, identity), 1:2)
  # an error in the master while waiting (here a time limit) ends the call
  sleeps <- global_fun(function(x) Sys.sleep(5))
  expect_error(with_time_limit(0.5, pool_lapply(1:4, sleeps, .progress = TRUE)),
               "time limit")
  expect_identical(bars(), before)
  expect_identical(pool_map(function(x) x * 2, 1:20, .progress = TRUE), as.list((1:20) * 2))
  expect_identical(bars(), before)
})

test_that("a .progress that is not NULL, TRUE or FALSE is refused", {
  local_pool()
  for (progress in list(NA, "yes", c(TRUE, TRUE), 1))
    expect_error(pool_lapply(1:2, identity, .progress = progress), class = "bgpool_bad_argument",
                 label = deparse(progress))
  expect_error(pool_map(identity, 1:2, .progress = "yes"),
               "pool_map(): `.progress` must be NULL", fixed = TRUE)
})
