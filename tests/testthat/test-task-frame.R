# Tasks see what they would see under parallel: called from a frame that
# leads to the worker's global environment, with none of bgpool's own
# variables in sight; functions given by name are found on the workers.

test_that("base functions that look in their caller's frame find the worker's globals, as under parSapply", {
  local_pool(2)
  ref <- local_psock(2)
  k <- 10
  threshold <- 5
  a <- "A"
  b <- "B"
  pool_export(c("k", "threshold", "a", "b"), envir = environment())
  parallel::clusterExport(ref, c("k", "threshold", "a", "b"), envir = environment())
  expect_identical(pool_sapply(list(quote(k * 2)), eval), 20)
  expect_identical(pool_sapply(list(quote(k * 2)), eval),
                   parallel::parSapply(ref, list(quote(k * 2)), eval))
  names_to_find <- c("threshold", "sd", "k", "inputs", "values", "state", "job")
  expect_identical(pool_sapply(names_to_find, exists),
                   parallel::parSapply(ref, names_to_find, exists))
  expect_identical(pool_lapply(c("a", "b"), get), parallel::parLapply(ref, c("a", "b"), get))
  expect_identical(pool_map(get, c("a", "b")), parallel::clusterMap(ref, get, c("a", "b")))
})

test_that("bgpool's own loop variables are not visible to tasks", {
  local_pool(2)
  own <- c("inputs", "values", "k", "request", "state", "job", "env", "chunk")
  seen <- pool_lapply(1:2, function(i) {
    own <- c("inputs", "values", "k", "request", "state", "job", "env", "chunk")
    own[vapply(own, exists, NA, envir = parent.frame())]
  })
  expect_identical(seen, list(character(), character()))
  seen <- pool_call(function(own) own[vapply(own, exists, NA, envir = parent.frame())], own)
  expect_identical(seen, list(character(), character()))
  # a task's caller is lapply()'s frame, holding X, FUN and i, as in parLapply()
  ref <- local_psock(2)
  frame_names <- global_fun(function(x) sort(ls(parent.frame())))
  expect_identical(pool_lapply(1:3, frame_names), parallel::parLapply(ref, 1:3, frame_names))
  frame_i <- global_fun(function(x) get("i", parent.frame()))
  expect_identical(pool_lapply(1:3, frame_i, chunk.size = 3),
                   parallel::parLapply(ref, 1:3, frame_i, chunk.size = 3))
})

test_that("a function given by name is the workers', as parallel finds it (pool_sapply's is the master's, as parSapply's)", {
  local_pool(2)
  ref <- local_psock(2)
  f <- function(...) "master"
  pool_evalq(f <- function(...) "worker")
  parallel::clusterEvalQ(ref, f <- function(...) "worker")
  expect_identical(pool_call("f"), parallel::clusterCall(ref, "f"))
  expect_identical(pool_call("f"), list("worker", "worker"))
  expect_identical(pool_lapply(1:2, "f"), parallel::parLapply(ref, 1:2, "f"))
  expect_identical(pool_map("f", 1:2), parallel::clusterMap(ref, "f", 1:2))
  expect_identical(pool_sapply(1:2, "f"), parallel::parSapply(ref, 1:2, "f"))
  expect_identical(pool_sapply(1:2, "f"), c("master", "master"))
  # one defined only on the workers
  pool_evalq(twice <- function(x) 2 * x)
  expect_identical(pool_lapply(1:3, "twice"), list(2, 4, 6))
  expect_identical(unlist(pool_map("twice", 1:3)), c(2, 4, 6))
  # and one defined nowhere: every element fails, saying so
  err <- tryCatch(pool_lapply(1:3, "nowhere_at_all"), error = function(e) e)
  expect_s3_class(err, "bgpool_task_error")
  expect_identical(err$failed, 1:3)
  expect_match(conditionMessage(err), "nowhere_at_all", fixed = TRUE)
})
