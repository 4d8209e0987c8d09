# Interrupting the master during a pool call: SIGINT (Ctrl-C) and
# setTimeLimit(). The master is a child R process (helper-processes.R) that
# prints markers; the test interrupts it and watches what it says.

# Child code: a pool of 2, a call of long tasks that the test interrupts,
# then a quick call whose answers must be right and fresh.
interrupted_call_child <- function(call) {
  bquote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    long <- function(i) {
      Sys.sleep(5)
      i
    }
    say("CALLING")
    t0 <- Sys.time()
    first <- tryCatch(.(call), interrupt = function(e) "interrupted")
    say("RETURNED", since(t0))
    t1 <- Sys.time()
    second <- pool_lapply(1:6, function(i) -i)
    second_time <- since(t1)
    t2 <- Sys.time()
    third <- pool_map(function(a, b) paste(a, b), c("x", "y", "z"), 1:3)
    third_time <- since(t2)
    say("DONE")
    save_result(list(first = first, second = second, second_time = second_time,
                     third = third, third_time = third_time, pids = pids,
                     pids_after = bgpool:::pool_info()$pids, size = pool_size()))
  })
}

check_interrupted_call <- function(call) {
  child <- local_r_child(interrupted_call_child(call))
  calling <- child_wait_for(child, "^CALLING", 60)
  Sys.sleep(1)  # the tasks are well under way
  expect_true(child$process$interrupt())  # SIGINT
  interrupted_at <- Sys.time()
  returned <- child_wait_for(child, "^RETURNED", 10)
  expect_lt(as.numeric(difftime(returned$time, interrupted_at, units = "secs")), 1.5)
  res <- child_result(child, 30)
  expect_identical(res$first, "interrupted")
  # the next calls give their own answers, not the cancelled call's, and do
  # not wait for the cancelled 5-second tasks
  expect_identical(res$second, as.list(-(1:6)))
  expect_lt(res$second_time, 2)
  expect_identical(res$third, list(x = "x 1", y = "y 2", z = "z 3"))
  expect_lt(res$third_time, 1)
  expect_workers_kept(res)
  expect_identical(res$size, 2L)
}

# The workers of an interrupted call are interrupted, not replaced; the
# psock backend cannot cancel a task, so it replaces them.
expect_workers_kept <- function(res) {
  if (on_psock()) {
    expect_length(res$pids_after, length(res$pids))
    expect_false(anyNA(res$pids_after))
  } else {
    expect_identical(res$pids_after, res$pids)
  }
}

test_that("SIGINT during pool_lapply returns at once; the next call is right and quick on the same workers", {
  check_interrupted_call(quote(pool_lapply(1:4, long)))
})

test_that("SIGINT during pool_map returns at once; the next call is right and quick on the same workers", {
  check_interrupted_call(quote(pool_map(function(x, y) {
    Sys.sleep(5)
    x + y
  }, 1:6, 6:1)))
})

test_that("SIGINT during pool_sapply with one element per chunk and a time limit also returns at once", {
  check_interrupted_call(quote(pool_sapply(1:4, long, chunk.size = 1, .timeout = 60)))
})

test_that("SIGINT during pool_call/pool_evalq returns at once; the next call is right", {
  check_interrupted_call(quote(pool_evalq(Sys.sleep(5))))
})

test_that("SIGINT during a call through the pool's cluster returns at once; the next call is right", {
  skip_on_psock("pool calls wait for an interrupted cluster call's replies, which its cluster cannot tell from a future's (it refuses instead)")
  check_interrupted_call(quote(parallel::clusterApplyLB(pool_cluster(), 1:4, long)))
})

test_that("a master call stopped by setTimeLimit() leaves the pool right for the next call", {
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    t0 <- Sys.time()
    first <- tryCatch({
      setTimeLimit(elapsed = 1, transient = TRUE)
      pool_lapply(1:4, function(i) {
        Sys.sleep(5)
        i
      })
    }, error = function(e) conditionMessage(e),
    interrupt = function(e) "an interrupt condition, not the time-limit error")
    first_time <- since(t0)
    setTimeLimit()
    t1 <- Sys.time()
    second <- pool_sapply(1:5, function(i) i * 7L)
    second_time <- since(t1)
    # and again with pool_map, the time limit set outside the call
    t2 <- Sys.time()
    third <- tryCatch({
      setTimeLimit(elapsed = 1, transient = TRUE)
      pool_map(function(x) {
        Sys.sleep(5)
        x
      }, 1:4)
    }, error = function(e) conditionMessage(e),
    interrupt = function(e) "an interrupt condition, not the time-limit error")
    third_time <- since(t2)
    setTimeLimit()
    fourth <- pool_map(function(a, b) a - b, 10:12, 1:3)
    save_result(list(first = first, first_time = first_time, second = second,
                     second_time = second_time, third = third, third_time = third_time,
                     fourth = fourth, pids = pids, pids_after = bgpool:::pool_info()$pids))
  }))
  res <- child_result(child, 60)
  expect_match(res$first, "reached elapsed time limit", fixed = TRUE)
  expect_lt(res$first_time, 2.5)
  expect_identical(res$second, (1:5) * 7L)
  expect_lt(res$second_time, 2)
  expect_match(res$third, "reached elapsed time limit", fixed = TRUE)
  expect_lt(res$third_time, 2.5)
  expect_identical(res$fourth, list(9L, 9L, 9L))
  expect_workers_kept(res)
})

test_that("a second SIGINT while the next call settles the cancelled one still leaves the pool right", {
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    long <- function(i) {
      Sys.sleep(5)
      i
    }
    say("CALLING")
    first <- tryCatch(pool_lapply(1:4, long), interrupt = function(e) "interrupted")
    say("FIRST", first[[1]])
    say("CALLING2")
    second <- tryCatch(pool_lapply(1:4, long), interrupt = function(e) "interrupted")
    say("SECOND", second[[1]])
    t0 <- Sys.time()
    third <- pool_sapply(1:4, function(i) i + 0.5)
    third_time <- since(t0)
    save_result(list(first = first, second = second, third = third, third_time = third_time,
                     pids = pids, pids_after = bgpool:::pool_info()$pids))
  }))
  child_wait_for(child, "^CALLING$", 60)
  Sys.sleep(0.5)
  child$process$interrupt()
  child_wait_for(child, "^CALLING2", 10)
  Sys.sleep(0.3)
  child$process$interrupt()
  child_wait_for(child, "^SECOND", 10)
  res <- child_result(child, 30)
  expect_identical(res$first, "interrupted")
  expect_identical(res$second, "interrupted")
  expect_identical(res$third, (1:4) + 0.5)
  expect_lt(res$third_time, 2)
  expect_workers_kept(res)
})

# A send that waits because the worker is busy (its socket is full) when the
# time limit or Ctrl-C comes: the user's handler gets that very condition,
# nothing is printed, and no worker is lost.
blocked_send_child <- function(stop_it) {
  bquote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    cl <- pool_cluster()
    # 30 MB of strings (which never go through shared memory): more than
    # the socket holds
    big <- paste0("s", seq_len(2e6))
    parallel:::sendCall(cl[[1]], function() Sys.sleep(3), list())  # node 1 is busy
    say("SENDING")
    t0 <- Sys.time()
    first <- tryCatch({
      .(stop_it)
      parallel:::sendCall(cl[[1]], function(x) length(x), list(big))
      "sent"
    }, error = function(e) paste("error:", conditionMessage(e)),
    interrupt = function(e) "interrupt")
    took <- since(t0)
    setTimeLimit()
    say("RETURNED")
    second <- pool_sapply(1:6, function(i) i * 2L)
    third <- parallel::parSapply(cl, 1:4, function(i) i + 1L)
    save_result(list(first = first, took = took, second = second, third = third, pids = pids,
                     pids_after = bgpool:::pool_info()$pids))
  })
}

test_that("the time limit during a send blocked by a busy worker: that error, nothing printed, no worker lost", {
  skip_on_psock("a send cut short leaves parallel's stream half-written, so that worker is replaced")
  child <- local_r_child(blocked_send_child(quote(setTimeLimit(elapsed = 1, transient = TRUE))))
  res <- child_result(child, 60)
  expect_identical(res$first, "error: reached elapsed time limit")
  expect_lt(res$took, 2.5)
  expect_identical(res$second, (1:6) * 2L)
  expect_identical(res$third, 2:5)
  expect_identical(res$pids_after, res$pids)
  output <- child_output(child)
  expect_false(grepl("Error in", output, fixed = TRUE), info = output)
})

test_that("Ctrl-C during a send blocked by a busy worker: an interrupt, and no worker lost", {
  skip_on_psock("a send cut short leaves parallel's stream half-written, so that worker is replaced")
  child <- local_r_child(blocked_send_child(NULL))
  child_wait_for(child, "^SENDING", 60)
  Sys.sleep(0.5)
  expect_true(child$process$interrupt())
  res <- child_result(child, 60)
  expect_identical(res$first, "interrupt")
  expect_identical(res$second, (1:6) * 2L)
  expect_identical(res$third, 2:5)
  expect_workers_kept(res)
})

test_that("Ctrl-C while the master waits between messages costs no worker, many times over", {
  child <- local_r_child(quote({
    init_pool(2)
    pids <- bgpool:::pool_info()$pids
    outcomes <- character()
    for (round in 1:5) {
      say("WAITING", round)
      outcomes[round] <- tryCatch({
        pool_lapply(1:4, function(i) { Sys.sleep(3); i })
        "finished"
      }, interrupt = function(e) "interrupt")
    }
    after <- pool_sapply(1:4, function(i) -i)
    save_result(list(outcomes = outcomes, after = after, pids = pids,
                     pids_after = bgpool:::pool_info()$pids))
  }))
  for (round in 1:5) {
    child_wait_for(child, paste0("^WAITING ", round, "$"), 60)
    Sys.sleep(0.3)
    child$process$interrupt()
  }
  res <- child_result(child, 60)
  expect_identical(res$outcomes, rep("interrupt", 5))
  expect_identical(res$after, -(1:4))
  expect_workers_kept(res)
})
