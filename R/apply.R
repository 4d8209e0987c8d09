# Applying a function over elements: pool_lapply, pool_sapply, pool_map.

#' Apply a function over elements in the background pool
#'
#' `pool_lapply()` and `pool_sapply()` take the arguments of
#' [parallel::parLapply()] and [parallel::parSapply()]; `pool_map()` those of
#' [parallel::clusterMap()]. Results are the same as theirs, in input order.
#' Unlike `parallel`, elements are handed out dynamically, in chunks sized to
#' the tasks (many small tasks travel together, long ones one at a time), so
#' uneven tasks are balanced across workers.
#'
#' A call returns every element's value, or fails with an error whose
#' fields account for each element exactly once: `finished` (the indices
#' whose task returned; their values are in `results`, which is `NULL`
#' elsewhere), `failed` (whose task raised an error; the conditions are in
#' `errors`) and `unfinished` (lost with a worker, or never run). If a task
#' raises an error, the other elements still run, and then an error of
#' class `bgpool_task_error` names the failed element. If a worker dies,
#' the call fails with an error of class `bgpool_worker_died` that says how
#' the worker ended and shows its last output (all the workers lost are in
#' its `losses` field). Warnings raised by tasks are signalled in the
#' master, as the conditions they were; what tasks print goes to the
#' workers' logs ([pool_output()]).
#'
#' Tasks run as under `parallel`: `pool_lapply()` and `pool_sapply()` call
#' `fun(X[[i]], ...)` from the frame of `lapply()` on the worker (with `X`,
#' `FUN`, `i` and `...`), `pool_map()` calls it as `do.call()` does, and
#' these frames lead to the worker's global environment.
#'
#' @param X A vector (atomic or list); other objects are converted with
#'   [as.list()].
#' @param fun,FUN The function to apply, or the name of one: found on the
#'   workers for `pool_lapply()` and `pool_map()` (as [parallel::parLapply()]
#'   and [parallel::clusterMap()] find it), in the master for
#'   `pool_sapply()` (as [parallel::parSapply()] does).
#' @param ... For `pool_lapply()` and `pool_sapply()`, further arguments to
#'   `fun`; for `pool_map()`, the vectors to map over.
#' @param chunk.size `NULL` (the default) for adaptive chunks, or the number
#'   of elements sent to a worker at a time.
#' @param simplify,USE.NAMES As for [sapply()].
#' @param MoreArgs A list of further arguments to `fun`.
#' @param RECYCLE Whether shorter vectors are recycled to the longest.
#' @param SIMPLIFY Whether to simplify the result, as [mapply()] does.
#' @param .retry How many times an element may run again after the worker
#'   running it was lost (it died, or was stopped at the time limit): a whole
#'   number from 0 to 1000. It runs again on another worker at once, or,
#'   when none is left, on a fresh one that is set up as the others were
#'   (see [pool_call()]). Errors raised by the task's own code are never
#'   retried.
#' @param .timeout The time limit, in seconds, for each element's task: a
#'   task still running then has its worker stopped (and replaced), and
#'   unless `.retry` lets it run again, the call fails with an error of
#'   class `bgpool_task_timeout`. With a limit, elements are sent one at a
#'   time.
#' @param .progress Whether to show a progress bar (cli's) that counts the
#'   elements as they finish: `TRUE`, `FALSE`, or `NULL` for one in
#'   interactive sessions except while knitting. As cli does, a bar shows
#'   only once the call has run for two seconds (option
#'   `cli.progress_show_after`).
#' @param .seed `NULL` to leave random numbers alone, or a seed (`TRUE`
#'   takes one from the session's random numbers) for results that do not
#'   depend on the pool's size or scheduling: the task of element `i` runs
#'   with its own L'Ecuyer-CMRG stream, stream 1 being the `.Random.seed`
#'   that `set.seed(.seed, kind = "L'Ecuyer-CMRG")` gives and stream `i + 1`
#'   [parallel::nextRNGStream()] of stream `i`. The session's own random
#'   number state is left as it was (except for drawing a seed for `TRUE`),
#'   and so is each worker's once the call is over.
#' @return A list (or, simplified, a vector or array) of the results.
#' @examples
#' init_pool(2)
#' x <- 42
#' pool_export("x")
#' pool_sapply(1:10, function(y) x + y)
#' pool_lapply(1:3, function(i, power) i^power, power = 2)
#' pool_map(function(src, dest) paste(src, "->", dest),
#'          src = c("a.txt", "b.txt"), dest = c("x/a.txt", "x/b.txt"))
#' # the same random numbers whatever the pool's size
#' pool_sapply(1:4, function(i) runif(1), .seed = 42)
#' delete_pool()
#' @export
pool_lapply <- function(X, fun, ..., chunk.size = NULL,
                        .retry = getOption("bgpool.retry", 0),
                        .timeout = getOption("bgpool.timeout", Inf),
                        .progress = getOption("bgpool.progress", NULL),
                        .seed = getOption("bgpool.seed", NULL)) {
  lapply_on_pool("pool_lapply()", X, function_or_name(fun, "fun", "pool_lapply()"),
                 list(...), chunk.size, .retry, .timeout, .progress, .seed)
}

#' @rdname pool_lapply
#' @export
pool_sapply <- function(X, FUN, ..., simplify = TRUE, USE.NAMES = TRUE, chunk.size = NULL,
                        .retry = getOption("bgpool.retry", 0),
                        .timeout = getOption("bgpool.timeout", Inf),
                        .progress = getOption("bgpool.progress", NULL),
                        .seed = getOption("bgpool.seed", NULL)) {
  FUN <- match_function(FUN, "FUN", "pool_sapply()", parent.frame())
  answer <- lapply_on_pool("pool_sapply()", as.list(X), FUN, list(...), chunk.size,
                           .retry, .timeout, .progress, .seed)
  if (USE.NAMES && is.character(X) && is.null(names(answer)))
    names(answer) <- X
  if (!isFALSE(simplify))
    simplify2array(answer, higher = (simplify == "array"))
  else answer
}

#' @rdname pool_lapply
#' @export
pool_map <- function(fun, ..., MoreArgs = NULL, RECYCLE = TRUE, SIMPLIFY = FALSE, USE.NAMES = TRUE,
                     .retry = getOption("bgpool.retry", 0),
                     .timeout = getOption("bgpool.timeout", Inf),
                     .progress = getOption("bgpool.progress", NULL),
                     .seed = getOption("bgpool.seed", NULL)) {
  caller <- "pool_map()"
  handle <- live_pool(caller)
  fun <- function_or_name(fun, "fun", caller)
  args <- list(...)
  if (length(args) == 0L)
    abort("pool_map(): give at least one vector to map over, e.g. pool_map(f, x = 1:3)",
          "bgpool_bad_argument")
  if (!is.null(MoreArgs) && !is.list(MoreArgs))
    abort("pool_map(): `MoreArgs` must be NULL or a list of further arguments to `fun`",
          "bgpool_bad_argument")
  n <- lengths(args)
  if (RECYCLE) {
    vlen <- max(n)
    if (vlen && min(n) == 0L)
      abort("pool_map(): zero-length inputs cannot be mixed with those of non-zero length",
            "bgpool_bad_argument")
  } else vlen <- min(n)

  labels <- map_names(args[[1L]], vlen, USE.NAMES)
  job <- list(kind = "map", fun = fun, extra = as.list(MoreArgs),
              arity = length(args), names = names(args))
  answer <- run_elements(caller, handle, job, lapply(args, as_elements), TRUE, vlen, 0, labels,
                         .retry, .timeout, .progress, .seed)
  names(answer) <- labels
  if (!isFALSE(SIMPLIFY) && length(answer))
    simplify2array(answer, higher = (SIMPLIFY == "array"))
  else answer
}

lapply_on_pool <- function(caller, X, fun, extra, chunk.size, retry, timeout, progress, seed) {
  handle <- live_pool(caller)
  chunk_size <- check_chunk_size(chunk.size, caller)
  # as lapply() does: X[[i]] of anything else is taken from as.list(X)
  if (!is.vector(X) || is.object(X))
    X <- as.list(X)
  job <- list(kind = "lapply", fun = fun, extra = extra)
  answer <- run_elements(caller, handle, job, X, FALSE, length(X), chunk_size, names(X),
                         retry, timeout, progress, seed)
  names(answer) <- names(X)
  answer
}

# Element i of x as clusterMap() takes it, x[[i]], in a form the native
# scheduler can slice: plain vectors as they are, anything with a class
# (whose `[[` may be a method) as a list of its elements.
as_elements <- function(x) {
  if (is.object(x) || !(is.atomic(x) || is.list(x)) || is.pairlist(x))
    lapply(seq_len(length(x)), function(i) x[[i]])
  else x
}

# Result names as clusterMap() gives them: from the first input, recycled.
map_names <- function(first, n, use_names) {
  if (!use_names || n == 0L) return(NULL)
  labels <- names(first)
  if (is.null(labels) && is.character(first)) labels <- as.vector(first)
  if (is.null(labels)) NULL else rep_len(labels, n)
}
