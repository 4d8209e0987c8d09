# A randomized differential test: each of bgpool's functions against its
# parallel counterpart on a PSOCK cluster of the same size, compared with
# identical(). The inputs come from fixed seeds, and every failure prints
# its seed and case, so that it can be replayed.
#
# Differences that bgpool makes on purpose, each tested below as what it is:
#  1. Warnings that tasks raise are signalled in the master, as the
#     conditions they were; parallel's workers drop them.
#  2. A failed task gives an error of class bgpool_task_error whose fields
#     account for every element (failed, errors, results, finished,
#     unfinished); parallel's is a simpleError "n nodes produced errors;
#     first error: ...". Both carry the first failed element's own message.
#  3. pool_call() and pool_map() call the function from a frame of bgpool's
#     that holds nothing and leads to the base namespace and the worker's
#     globals, so that no variables of the pool's machinery are in sight;
#     parallel's worker loop frame exposes its own (msg, master, success,
#     ...) and leads through parallel's namespace. So too a function given
#     by name to pool_call(), pool_lapply() or pool_map() is never one of
#     parallel's internals, which parallel finds before the worker's own.
#  4. Tasks run from bgpool's own code: the frame a pool_lapply() task is
#     called from is lapply()'s, as under parLapply(), but the call stack
#     above it is not (sys.function(-1) is not lapply).
#  5. Elements go to workers in bgpool's chunks: adaptive ones by default,
#     runs of exactly `chunk.size` elements when it is given, where
#     parLapply() splits X evenly (splitIndices()). A task sees this in
#     the X and i of its calling frame (X[[i]] is its element either way).
#  6. pool_map() over zero-length inputs returns list(), as mapply() does;
#     clusterMap() returns NULL, or fails naming it when the first input is
#     character or named.
#  7. pool_map(RECYCLE = FALSE) names its result with the first input's
#     names (or values) up to the result's length; clusterMap() fails
#     assigning all of them when the first input is the longer.
#  8. A named zero-length X (a data frame without columns, say) keeps its
#     empty names, as lapply() keeps them; parLapply() drops them.
#  9. An X that is not a vector, such as an environment, is converted with
#     as.list() by pool_lapply(); parLapply() fails on it.
# 10. The workers have bgpool (and what it imports) loaded.
# 11. pool_export() of a variable that does not exist fails with a classed
#     error before exporting anything; clusterExport() exports the
#     variables named before it, then fails.

differential_seed <- 20240611L

# global_fun(), and without the source reference that functions defined in
# a test file carry: it holds the whole file, which makes every PSOCK
# message that takes the function some 14 kB and some 40 ms slower.
global_task <- function(f) utils::removeSource(global_fun(f))

# --- random inputs ---------------------------------------------------------

# Runs `make()` n times from `seed`, leaving the session's random numbers
# (and generator kind) as they were.
random_cases <- function(seed, n, make) {
  local_rng_unchanged()
  set.seed(seed, kind = "Mersenne-Twister", normal.kind = "Inversion", sample.kind = "Rejection")
  lapply(seq_len(n), function(k) make())
}

# One of `choices` (sample() would take a lone number n as 1:n).
pick <- function(choices) choices[[sample.int(length(choices), 1L)]]

# Names for n elements: none, unique, duplicated, with an NA, or with
# empty ones. A zero-length X gets none: its empty names are difference 8.
random_names <- function(n) {
  if (n == 0L) return(NULL)
  switch(pick(c("none", "none", "unique", "duplicated", "na", "empty")),
         none = NULL,
         unique = paste0("e", seq_len(n)),
         duplicated = sample(c("a", "b"), n, replace = TRUE),
         na = replace(paste0("e", seq_len(n)), sample.int(n, 1L), NA),
         empty = sample(c("", "k"), n, replace = TRUE))
}

random_atom <- function(n) {
  switch(pick(c("integer", "double", "character", "logical", "complex", "factor", "Date",
                "POSIXct")),
         integer = sample(c(-3:3, NA), n, replace = TRUE),
         double = sample(c(-1.5, 0, 0.25, 2, NA, NaN, Inf), n, replace = TRUE),
         character = sample(c("a", "bb", "", NA, "\u00e9"), n, replace = TRUE),
         logical = sample(c(TRUE, FALSE, NA), n, replace = TRUE),
         complex = complex(real = sample(-2:2, n, replace = TRUE), imaginary = 1),
         factor = factor(sample(c("lo", "mid", "hi"), n, replace = TRUE),
                         levels = c("lo", "mid", "hi")),
         Date = as.Date("2024-02-28") + sample(-2:2, n, replace = TRUE),
         POSIXct = as.POSIXct("2024-03-31 01:30:00", tz = "UTC") +
           3600 * sample(0:3, n, replace = TRUE))
}

# A list of mixed types: vectors of any length, NULLs, lists, data frames
# and calls.
random_list <- function(n) {
  lapply(seq_len(n), function(i) {
    switch(pick(c("atom", "atom", "null", "list", "frame", "call")),
           atom = random_atom(pick(0:3)),
           null = NULL,
           list = list(a = random_atom(1L), b = NULL, c = list()),
           frame = data.frame(k = 1:2, v = c("x", "y")),
           call = quote(a + b))
  })
}

# An X: a vector (names of every kind), a list, a data frame or a matrix.
random_input <- function(n = pick(0:6)) {
  kind <- pick(c("atom", "atom", "atom", "list", "list", "frame", "matrix"))
  if (kind == "frame" && n == 0L) kind <- "list"
  x <- switch(kind,
              atom = random_atom(n),
              list = random_list(n),
              frame = as.data.frame(setNames(lapply(seq_len(n), function(j) random_atom(2L)),
                                             paste0("c", seq_len(n)))),
              matrix = matrix(sample(c(1.5, NA, -2), 2L * n, replace = TRUE), nrow = 2L))
  if (kind %in% c("atom", "list")) names(x) <- random_names(length(x))
  x
}

# Up to two extra arguments, by position or by name.
random_extras <- function() {
  n <- pick(0:2)
  extras <- lapply(seq_len(n), function(j) random_atom(pick(0:2)))
  if (n && pick(c(TRUE, FALSE))) names(extras) <- sample(c("", "k", "w"), n)
  extras
}

case_info <- function(seed, k, case) {
  paste0("seed ", seed, ", case ", k, ":\n", paste(deparse(case), collapse = "\n"))
}

# The random inputs hold every kind that the test means to cover.
expect_covers <- function(inputs, zero_length = TRUE) {
  has <- function(what) any(vapply(inputs, what, NA))
  if (zero_length) expect_true(has(function(x) length(x) == 0L), label = "a zero-length input")
  expect_true(has(is.data.frame), label = "a data frame")
  expect_true(has(is.factor), label = "a factor")
  expect_true(has(function(x) inherits(x, "Date")), label = "Dates")
  expect_true(has(function(x) is.list(x) && !is.data.frame(x)), label = "a list")
  expect_true(has(is.character), label = "a character vector")
  expect_true(has(function(x) length(x) > 0L && is.null(names(x))), label = "an unnamed input")
  expect_true(has(function(x) anyDuplicated(names(x)) > 0L), label = "duplicated names")
  expect_true(has(function(x) anyNA(names(x))), label = "NA names")
}

cases_field <- function(cases, field) lapply(cases, `[[`, field)

# --- tasks -------------------------------------------------------------------

# Tasks for pool_lapply() and pool_sapply(): fun(x, ...), none depending on
# how elements are chunked. A string names a function that both the workers
# and the master define (as parLapply() finds it on the workers, parSapply()
# in the master).
element_tasks <- list(
  identity = global_task(function(x, ...) x),
  length = global_task(function(x, ...) length(x)),
  null = global_task(function(x, ...) NULL),
  empty = global_task(function(x, ...) if (is.atomic(x) || is.list(x)) x[0] else NULL),
  class = global_task(function(x, ...) class(x)),
  frame = global_task(function(x, ...) data.frame(len = length(x), cls = class(x)[1L])),
  extras = global_task(function(x, ...) list(x, ...)),
  extra_names = global_task(function(x, ...) names(list(...))),
  nargs = global_task(function(x, ...) nargs()),
  exists_X = global_task(function(x, ...) exists("X", envir = parent.frame())),
  frame_names = global_task(function(x, ...) sort(ls(parent.frame()))),
  eval_X_i = global_task(function(x, ...) identical(eval(quote(X[[i]]), parent.frame()), x)),
  get_FUN = global_task(function(x, ...) is.function(get("FUN", envir = parent.frame()))),
  global = global_task(function(x, ...) list(eval(quote(diff_offset)), get("diff_offset"),
                                            exists("diff_offset"), exists("diff_nowhere"))),
  by_name = "diff_twice"
)

diff_twice_definition <- quote(diff_twice <- function(x, ...) if (is.numeric(x)) 2 * x else x)

# Tasks for pool_map(), called with each input's element and MoreArgs.
map_tasks <- list(
  list = global_task(function(...) list(...)),
  first = global_task(function(x, ...) x),
  names = global_task(function(...) names(list(...))),
  classes = global_task(function(...) vapply(list(...), function(v) class(v)[1L], "")),
  null = global_task(function(...) NULL),
  empty = global_task(function(...) integer(0)),
  frame = global_task(function(...) data.frame(n = nargs(), len = length(list(...)[[1L]]))),
  exists_X = global_task(function(...) exists("X", envir = parent.frame())),
  global = global_task(function(...) get("diff_offset") + nargs()),
  by_name = "diff_lengths"
)

diff_lengths_definition <- quote(diff_lengths <- function(...) lengths(list(...)))

# Tasks for pool_call().
call_tasks <- list(
  list = global_task(function(...) list(...)),
  nargs = global_task(function(...) nargs()),
  names = global_task(function(...) names(list(...))),
  first_class = global_task(function(a, ...) class(a)),
  rev = global_task(function(...) rev(list(...))),
  by_name = "diff_lengths",
  base_name = "list"
)

# Defines on the pool and on `cl` what tasks look for on the workers.
set_up_both <- function(cl) {
  diff_offset <- 100L
  pool_export("diff_offset", envir = environment())
  parallel::clusterExport(cl, "diff_offset", envir = environment())
  for (definition in list(diff_twice_definition, diff_lengths_definition)) {
    eval(bquote(pool_evalq(.(definition))))
    eval(bquote(parallel::clusterEvalQ(cl, .(definition))))
  }
}

# --- comparing ---------------------------------------------------------------

# What a call came to: its value, or the message of the error that a task
# raised (without the words that bgpool and parallel wrap it in).
outcome <- function(expr) {
  tryCatch(list(value = expr), error = function(e) {
    if (inherits(e, "bgpool_task_error")) e <- e$errors[[1L]]
    message <- sub("^(one node produced an error|[0-9]+ nodes produced errors; first error): ",
                   "", conditionMessage(e))
    list(error = sub("^pool_[a-z]+\\(\\): ", "", message))
  })
}

# The value of `expr` and the messages of the warnings it signalled.
with_warnings <- function(expr) {
  messages <- character()
  value <- withCallingHandlers(expr, warning = function(w) {
    messages <<- c(messages, conditionMessage(w))
    invokeRestart("muffleWarning")
  })
  list(value = value, warnings = messages)
}

# --- random comparisons ------------------------------------------------------

test_that("pool_lapply() matches parLapply() on random inputs, tasks, extra arguments and chunk sizes", {
  local_pool()
  cl <- local_psock()
  set_up_both(cl)
  seed <- differential_seed + 1L
  cases <- random_cases(seed, 80, function() {
    list(X = random_input(), task = pick(names(element_tasks)), extras = random_extras(),
         chunk.size = pick(list(NULL, NULL, 1, 2, 5)))
  })
  expect_covers(cases_field(cases, "X"))
  expect_setequal(unlist(cases_field(cases, "task")), names(element_tasks))
  for (k in seq_along(cases)) {
    case <- cases[[k]]
    fun <- element_tasks[[case$task]]
    args <- c(list(case$X, fun), case$extras, list(chunk.size = case$chunk.size))
    expect_identical(outcome(do.call(pool_lapply, args, quote = TRUE)),
                     outcome(do.call(parallel::parLapply, c(list(cl), args), quote = TRUE)),
                     info = case_info(seed, k, case))
  }
})

test_that("pool_sapply() matches parSapply() on random inputs, with every simplify and USE.NAMES", {
  local_pool()
  cl <- local_psock()
  set_up_both(cl)
  eval(diff_twice_definition)  # pool_sapply() and parSapply() find a named FUN here
  seed <- differential_seed + 2L
  cases <- random_cases(seed, 80, function() {
    X <- if (pick(1:4) == 1L) sample(c("a", "bb", NA, ""), pick(0:4), replace = TRUE) else random_input()
    list(X = X, task = pick(names(element_tasks)), extras = random_extras(),
         simplify = pick(list(TRUE, FALSE, "array")), USE.NAMES = pick(c(TRUE, FALSE)),
         chunk.size = pick(list(NULL, NULL, 1, 3)))
  })
  expect_covers(cases_field(cases, "X"))
  expect_setequal(unlist(cases_field(cases, "task")), names(element_tasks))
  expect_setequal(cases_field(cases, "simplify"), list(TRUE, FALSE, "array"))
  for (k in seq_along(cases)) {
    case <- cases[[k]]
    args <- c(list(case$X, element_tasks[[case$task]]), case$extras,
              case[c("simplify", "USE.NAMES", "chunk.size")])
    expect_identical(outcome(do.call(pool_sapply, args, quote = TRUE)),
                     outcome(do.call(parallel::parSapply, c(list(cl), args), quote = TRUE)),
                     info = case_info(seed, k, case))
  }
})

test_that("pool_map() matches clusterMap() on random inputs, MoreArgs, RECYCLE, SIMPLIFY and USE.NAMES", {
  local_pool()
  cl <- local_psock()
  set_up_both(cl)
  seed <- differential_seed + 3L
  cases <- random_cases(seed, 80, function() {
    m <- pick(1:3)
    inputs <- lapply(seq_len(m), function(j) {
      if (pick(1:4) == 1L) sample(c("p", "q", NA), pick(1:5), replace = TRUE)
      else random_input(pick(1:5))
    })
    arg_names <- sample(c("x", "y", "z"), m)
    arg_names[sample(c(TRUE, FALSE), m, replace = TRUE)] <- ""
    if (any(nzchar(arg_names))) names(inputs) <- arg_names
    list(inputs = inputs, task = pick(names(map_tasks)),
         MoreArgs = pick(list(NULL, NULL, list(), list(k = random_atom(1L)),
                              list(random_atom(2L), w = NULL))),
         RECYCLE = pick(c(TRUE, TRUE, FALSE)), SIMPLIFY = pick(list(FALSE, TRUE, "array")),
         USE.NAMES = pick(c(TRUE, TRUE, FALSE)))
  })
  expect_covers(unlist(cases_field(cases, "inputs"), recursive = FALSE), zero_length = FALSE)
  expect_setequal(unlist(cases_field(cases, "task")), names(map_tasks))
  recycled <- vapply(cases, function(case) {
    case$RECYCLE && length(unique(lengths(case$inputs))) > 1L
  }, NA)
  expect_gt(sum(recycled), 0L)
  truncated <- 0L
  for (k in seq_along(cases)) {
    case <- cases[[k]]
    info <- case_info(seed, k, case)
    options <- case[c("MoreArgs", "RECYCLE", "SIMPLIFY", "USE.NAMES")]
    fun <- map_tasks[[case$task]]
    ours <- outcome(do.call(pool_map, c(list(fun), case$inputs, options), quote = TRUE))
    theirs <- outcome(do.call(parallel::clusterMap, c(list(cl, fun), case$inputs, options),
                              quote = TRUE))
    first <- case$inputs[[1L]]
    vlen <- min(lengths(case$inputs))
    if (!case$RECYCLE && case$USE.NAMES && length(first) > vlen &&
          (!is.null(names(first)) || is.character(first))) {
      # difference 7: clusterMap() fails to name its result; bgpool names
      # it as clusterMap() names the result of the first input cut short
      truncated <- truncated + 1L
      expect_match(theirs$error, "'names' attribute", fixed = TRUE, info = info)
      inputs <- case$inputs
      inputs[[1L]] <- first[seq_len(vlen)]
      theirs <- outcome(do.call(parallel::clusterMap, c(list(cl, fun), inputs, options),
                                quote = TRUE))
    }
    expect_identical(ours, theirs, info = info)
  }
  expect_gt(truncated, 0L)  # the cases include difference 7
})

test_that("pool_call() matches clusterCall() with random arguments, and functions given by name", {
  local_pool()
  cl <- local_psock()
  set_up_both(cl)
  seed <- differential_seed + 4L
  cases <- random_cases(seed, 30, function() {
    n <- pick(0:3)
    args <- lapply(seq_len(n), function(j) pick(list(random_atom(pick(0:3)), random_list(2L),
                                                     random_input(2L))))
    # no "c", which clusterCall() would take as its `cl`
    if (n && pick(c(TRUE, FALSE))) names(args) <- sample(c("a", "b", "d", ""), n)
    list(task = pick(names(call_tasks)), args = args)
  })
  expect_setequal(unlist(cases_field(cases, "task")), names(call_tasks))
  for (k in seq_along(cases)) {
    case <- cases[[k]]
    fun <- call_tasks[[case$task]]
    expect_identical(outcome(do.call(pool_call, c(list(fun), case$args), quote = TRUE)),
                     outcome(do.call(parallel::clusterCall, c(list(cl, fun), case$args),
                                     quote = TRUE)),
                     info = case_info(seed, k, case))
  }
})

test_that("pool_evalq() matches clusterEvalQ() on random expressions, and their assignments persist alike", {
  local_pool()
  cl <- local_psock()
  seed <- differential_seed + 5L
  forms <- list(
    function(v) bquote(identity(.(v))),
    function(v) bquote(invisible(.(v))),
    function(v) bquote(rev(.(v))),
    function(v) bquote(class(.(v))),
    function(v) bquote({ diff_kept <- .(v); length(diff_kept) }),
    function(v) quote(if (exists("diff_kept")) diff_kept else NULL),
    function(v) quote(NULL),
    function(v) quote(ls()),
    function(v) quote(sort(ls(parent.frame()))),
    function(v) quote(environmentName(environment())),
    function(v) quote(exists(".Random.seed")),
    function(v) bquote(stop("no ", .(length(v))))
  )
  cases <- random_cases(seed, 30, function() {
    form <- pick(seq_along(forms))
    list(form = form, expr = forms[[form]](random_input(pick(0:4))))
  })
  expect_setequal(unlist(cases_field(cases, "form")), seq_along(forms))
  for (k in seq_along(cases)) {
    case <- cases[[k]]
    expect_identical(outcome(eval(bquote(pool_evalq(.(case$expr))))),
                     outcome(eval(bquote(parallel::clusterEvalQ(cl, .(case$expr))))),
                     info = case_info(seed, k, case))
  }
})

test_that("pool_export() then reading back matches clusterExport() on random values", {
  local_pool()
  cl <- local_psock()
  seed <- differential_seed + 6L
  cases <- random_cases(seed, 12, function() {
    n <- pick(1:4)
    values <- lapply(seq_len(n), function(j) pick(list(random_input(), random_list(3L), NULL)))
    names(values) <- paste0("diff_v", sample.int(6L, n))
    values
  })
  # exported from a function's frame, found there or in its enclosure, as
  # clusterExport() finds them
  export_from <- function(values, exporter) {
    enclosure <- list2env(values[-1L])
    frame <- new.env(parent = enclosure)
    assign(names(values)[1L], values[[1L]], envir = frame)
    exporter(names(values), frame)
  }
  for (k in seq_along(cases)) {
    values <- cases[[k]]
    info <- case_info(seed, k, values)
    export_from(values, function(names, frame) pool_export(names, envir = frame))
    export_from(values, function(names, frame) parallel::clusterExport(cl, names, envir = frame))
    expect_identical(pool_call(mget, names(values), envir = globalenv()),
                     parallel::clusterCall(cl, mget, names(values), envir = globalenv()),
                     info = info)
    expect_identical(pool_call(mget, names(values), envir = globalenv())[[1L]], values,
                     info = info)
    expect_identical(eval(bquote(pool_evalq(.(as.name(names(values)[1L]))))),
                     eval(bquote(parallel::clusterEvalQ(cl, .(as.name(names(values)[1L]))))),
                     info = info)
  }
  # every name exported in any case, with its last value, on both
  exported <- sort(unique(unlist(lapply(cases, names))))
  expect_identical(pool_evalq(sort(ls(pattern = "^diff_v"))), rep(list(exported), 2L))
  expect_identical(pool_call(mget, exported, envir = globalenv()),
                   parallel::clusterCall(cl, mget, exported, envir = globalenv()))
  expect_identical(pool_export(character()), parallel::clusterExport(cl, character()))
})

test_that("values exported through shared memory read back as clusterExport() sends them", {
  local_pool()
  cl <- local_psock()
  withr::local_options(bgpool.share_threshold = 1)  # every vector with data to share
  seed <- differential_seed + 7L
  cases <- random_cases(seed, 16, function() {
    value <- pick(list(random_input(), random_atom(pick(0:6)), matrix(random_atom(6L), 2L),
                       array(sample(1:24), 2:4), seq_len(pick(1:5))))
    if (is.null(dim(value)) && !is.data.frame(value)) names(value) <- random_names(length(value))
    else if (is.matrix(value) && pick(c(TRUE, FALSE))) rownames(value) <- c("r1", "r2")
    value
  })
  for (k in seq_along(cases)) {
    diff_shared <- cases[[k]]
    info <- case_info(seed, k, diff_shared)
    expect_identical(outcome(pool_export("diff_shared", envir = environment())),
                     list(value = NULL), info = info)
    parallel::clusterExport(cl, "diff_shared", envir = environment())
    expect_identical(outcome(pool_evalq(diff_shared)),
                     outcome(parallel::clusterEvalQ(cl, diff_shared)), info = info)
  }
})

# --- the lifecycle -------------------------------------------------------------

test_that("init_pool(), pool_exists(), pool_size() and delete_pool() agree with makeCluster(), length() and stopCluster()", {
  local_rng_unchanged()  # clusterSetRNGStream() leaves the kind L'Ecuyer-CMRG
  suppressMessages(delete_pool())
  expect_false(pool_exists())
  expect_identical(pool_size(), 0L)
  n <- test_pool_size()
  suppressMessages(init_pool(n))
  withr::defer(suppressMessages(delete_pool()))
  cl <- parallel::makeCluster(n)
  withr::defer(try(parallel::stopCluster(cl), silent = TRUE))
  expect_true(pool_exists())
  expect_identical(pool_size(), length(cl))
  expect_identical(lengths(list(pool_call(Sys.getpid), pool_evalq(1), pool_call("c"))),
                   lengths(list(parallel::clusterCall(cl, Sys.getpid), parallel::clusterEvalQ(cl, 1),
                                parallel::clusterCall(cl, "c"))))
  expect_identical(length(unique(unlist(pool_evalq(Sys.getpid())))),
                   length(unique(unlist(parallel::clusterEvalQ(cl, Sys.getpid())))))
  # fresh workers: the same empty global environment and packages attached
  expect_identical(pool_evalq(ls()), parallel::clusterEvalQ(cl, ls()))
  expect_identical(pool_evalq(search()), parallel::clusterEvalQ(cl, search()))

  # init_pool() on the pool resets the same workers to what a new cluster has
  pool_evalq(diff_left <- 1)
  pids <- pool_evalq(Sys.getpid())
  suppressMessages(init_pool(n))
  expect_identical(pool_evalq(Sys.getpid()), pids)
  expect_identical(pool_evalq(ls()), parallel::clusterEvalQ(cl, ls()))
  # and with a seed, gives the workers clusterSetRNGStream()'s streams
  suppressMessages(init_pool(n, seed = differential_seed))
  parallel::clusterSetRNGStream(cl, differential_seed)
  expect_identical(pool_evalq(runif(3)), parallel::clusterEvalQ(cl, runif(3)))
  expect_identical(pool_size(), length(cl))

  # deleted and stopped: neither runs anything any more
  suppressMessages(delete_pool())
  parallel::stopCluster(cl)
  expect_false(pool_exists())
  expect_identical(pool_size(), 0L)
  expect_error(pool_call(Sys.getpid), class = "bgpool_no_pool")
  expect_error(parallel::clusterCall(cl, Sys.getpid))
})

# --- deliberate differences -------------------------------------------------------

test_that("difference 1: tasks' warnings are signalled in the master, where parallel drops them", {
  local_pool()
  cl <- local_psock()
  warn_odd <- global_task(function(x, ...) {
    if (x %% 2 == 1) warning("odd element ", x)
    x
  })
  ours <- with_warnings(pool_lapply(1:5, warn_odd))
  theirs <- with_warnings(parallel::parLapply(cl, 1:5, warn_odd))
  expect_identical(ours$value, theirs$value)
  expect_identical(sort(ours$warnings), paste("odd element", c(1, 3, 5)))
  expect_identical(theirs$warnings, character())
  ours <- with_warnings(pool_map(warn_odd, 1:3, 1))
  theirs <- with_warnings(parallel::clusterMap(cl, warn_odd, 1:3, 1))
  expect_identical(ours$value, theirs$value)
  expect_identical(sort(ours$warnings), paste("odd element", c(1, 3)))
  expect_identical(theirs$warnings, character())
  ours <- with_warnings(pool_evalq({ warning("from a worker"); 1 }))
  theirs <- with_warnings(parallel::clusterEvalQ(cl, { warning("from a worker"); 1 }))
  expect_identical(ours$value, theirs$value)
  expect_identical(ours$warnings, rep("from a worker", 2L))
  expect_identical(theirs$warnings, character())
  # a warning keeps its class
  classed <- global_task(function(x) {
    warning(structure(class = c("diff_warning", "warning", "condition"),
                      list(message = "classed", call = NULL)))
    x
  })
  expect_warning(pool_lapply(1, classed), class = "diff_warning")
})

test_that("difference 2: a failed task is a classed error that accounts for each element, with parallel's message at its heart", {
  local_pool()
  cl <- local_psock()
  fail_some <- global_task(function(x, bad) if (x %in% bad) stop("bad element ", x) else x * 10L)
  seed <- differential_seed + 8L
  cases <- random_cases(seed, 10, function() {
    X <- seq_len(pick(2:8))
    names(X) <- random_names(length(X))
    list(X = X, bad = sample(unname(X), pick(1:2)))
  })
  for (k in seq_along(cases)) {
    case <- cases[[k]]
    info <- case_info(seed, k, case)
    ours <- tryCatch(pool_lapply(case$X, fail_some, bad = case$bad), error = identity)
    theirs <- tryCatch(parallel::parLapply(cl, case$X, fail_some, bad = case$bad),
                       error = identity)
    expect_s3_class(ours, c("bgpool_task_error", "bgpool_error", "error"))
    expect_false(inherits(theirs, "bgpool_error"))
    failed <- which(case$X %in% case$bad)
    message <- paste("bad element", case$X[failed[1L]])
    expect_match(conditionMessage(ours), message, fixed = TRUE, info = info)
    expect_match(conditionMessage(theirs), paste0("error: ", message, "$"), info = info)
    expect_identical(outcome(stop(ours)), outcome(stop(theirs)), info = info)
    expect_identical(unname(ours$failed), failed, info = info)
    expect_identical(vapply(ours$errors, conditionMessage, ""),
                     paste("bad element", case$X[failed]), info = info)
    expect_identical(unname(ours$finished), setdiff(seq_along(case$X), failed), info = info)
    expect_identical(ours$unfinished, integer(), info = info)
    expect_identical(unname(ours$results[ours$finished]),
                     as.list(unname(case$X[ours$finished]) * 10L), info = info)
  }
  # the same for the other functions that run tasks
  boom <- global_task(function(...) stop("boom"))
  calls <- list(
    sapply = list(quote(pool_sapply(c(a = 1, b = 2), boom)),
                  quote(parallel::parSapply(cl, c(a = 1, b = 2), boom))),
    map = list(quote(pool_map(boom, 1:3)), quote(parallel::clusterMap(cl, boom, 1:3))),
    call = list(quote(pool_call(boom, 1)), quote(parallel::clusterCall(cl, boom, 1))),
    evalq = list(quote(pool_evalq(stop("boom"))), quote(parallel::clusterEvalQ(cl, stop("boom"))))
  )
  for (name in names(calls)) {
    ours <- tryCatch(eval(calls[[name]][[1L]]), error = identity)
    theirs <- tryCatch(eval(calls[[name]][[2L]]), error = identity)
    expect_s3_class(ours, "bgpool_task_error")
    expect_match(conditionMessage(theirs), "(produced an error|produced errors; first error): boom$",
                 label = name)
    expect_identical(outcome(stop(ours)), outcome(stop(theirs)), label = name)
  }
})

test_that("difference 3: pool_call() and pool_map() call from a frame without the pool's variables, where parallel's shows its worker loop and namespace", {
  local_pool()
  cl <- local_psock()
  look <- global_task(function(...) {
    list(exists("msg", envir = parent.frame()), ls(parent.frame()),
         environmentName(parent.env(parent.frame())),
         exists("makeCluster", envir = parent.frame()))
  })
  ours <- pool_call(look, 1)
  theirs <- parallel::clusterCall(cl, look, 1)
  expect_identical(ours, rep(list(list(FALSE, character(), "base", FALSE)), 2L))
  for (seen in theirs) {
    expect_true(seen[[1L]])
    expect_true(all(c("msg", "master", "success") %in% seen[[2L]]))
    expect_identical(seen[[3L]], "parallel")
    expect_true(seen[[4L]])
  }
  expect_identical(pool_map(look, 1:2), rep(list(list(FALSE, character(), "base", FALSE)), 2L))
  expect_true(all(vapply(parallel::clusterMap(cl, look, 1:2), `[[`, NA, 1L)))
  # so a function named like one of parallel's internals is the worker's own
  definition <- quote(splitIndices <- function(...) "the worker's")
  eval(bquote(pool_evalq(.(definition))))
  eval(bquote(parallel::clusterEvalQ(cl, .(definition))))
  theirs <- parallel::splitIndices(4, 2)
  expect_identical(pool_call("splitIndices", 4, 2), rep(list("the worker's"), 2L))
  expect_identical(parallel::clusterCall(cl, "splitIndices", 4, 2), rep(list(theirs), 2L))
  expect_identical(pool_lapply(4, "splitIndices", 2), list("the worker's"))
  expect_identical(parallel::parLapply(cl, 4, "splitIndices", 2), list(theirs))
  expect_identical(pool_map("splitIndices", 4, 2), list("the worker's"))
  expect_identical(parallel::clusterMap(cl, "splitIndices", 4, 2), list(theirs))
})

test_that("difference 4: a pool_lapply() task's caller is lapply()'s frame, but not lapply() itself", {
  local_pool()
  cl <- local_psock()
  frame <- global_task(function(x) {
    list(sort(ls(parent.frame())), environmentName(parent.env(parent.frame())),
         identical(sys.function(-1), lapply))
  })
  ours <- pool_lapply(1:3, frame)
  theirs <- parallel::parLapply(cl, 1:3, frame)
  expect_identical(lapply(ours, `[`, 1:2), lapply(theirs, `[`, 1:2))
  expect_identical(vapply(ours, `[[`, NA, 3L), rep(FALSE, 3L))
  expect_identical(vapply(theirs, `[[`, NA, 3L), rep(TRUE, 3L))
})

test_that("difference 5: bgpool's chunks are runs of chunk.size elements, parLapply's even splits", {
  local_pool()
  cl <- local_psock()
  position <- global_task(function(x) {
    c(i = get("i", parent.frame()), chunk = length(get("X", parent.frame())),
      same = identical(get("X", parent.frame())[[get("i", parent.frame())]], x))
  })
  for (n in 1:7) for (size in 1:4) {
    info <- sprintf("n = %d, chunk.size = %d", n, size)
    ours <- pool_sapply(seq_len(n), position, chunk.size = size)
    theirs <- parallel::parSapply(cl, seq_len(n), position, chunk.size = size)
    expect_identical(unname(ours["i", ]), (seq_len(n) - 1L) %% size + 1L, info = info)
    splits <- parallel::splitIndices(n, ceiling(n / size))
    expect_identical(unname(theirs["i", ]), unlist(lapply(splits, seq_along)), info = info)
    expect_identical(unname(ours["same", ]), rep(1L, n), info = info)
    expect_identical(unname(theirs["same", ]), rep(1L, n), info = info)
    if (n %% size == 0L || size >= n) expect_identical(ours, theirs, info = info)
  }
  # by default, parLapply() sends one chunk to each worker, bgpool smaller ones
  theirs <- parallel::parSapply(cl, 1:8, position)
  expect_identical(unname(theirs["chunk", ]), rep(4L, 8L))
  ours <- pool_sapply(1:8, position)
  expect_true(all(ours["chunk", ] >= 1L & ours["chunk", ] <= 8L))
  expect_identical(unname(ours["same", ]), rep(1L, 8L))
})

test_that("difference 6: pool_map() over zero-length inputs gives list(), as mapply() does", {
  local_pool()
  cl <- local_psock()
  f <- global_task(function(...) list(...))
  for (first in list(integer(), list(), NULL, character(), setNames(integer(), character()))) {
    info <- paste(deparse(first), collapse = "")
    expect_identical(pool_map(f, first), list(), info = info)
    expect_identical(pool_map(f, first, SIMPLIFY = TRUE), list(), info = info)
    theirs <- outcome(parallel::clusterMap(cl, f, first))
    if (is.character(first) || !is.null(names(first)))
      expect_match(theirs$error, "attempt to set an attribute on NULL", fixed = TRUE, info = info)
    else expect_identical(theirs, list(value = NULL), info = info)
  }
  expect_identical(pool_map(f, 1:3, integer(), RECYCLE = FALSE), list())
  expect_null(parallel::clusterMap(cl, f, 1:3, integer(), RECYCLE = FALSE))
  # mixing zero-length inputs with others fails in both
  expect_identical(outcome(pool_map(f, 1:3, integer())),
                   outcome(parallel::clusterMap(cl, f, 1:3, integer())))
  expect_error(pool_map(f, 1:3, integer()), class = "bgpool_bad_argument")
})

test_that("difference 7: pool_map(RECYCLE = FALSE) names its result with the first input's leading names", {
  local_pool()
  cl <- local_psock()
  f <- global_task(function(x, y) paste(x, y))
  expect_identical(pool_map(f, c(a = 1, b = 2, c = 3), 1:2, RECYCLE = FALSE),
                   list(a = "1 1", b = "2 2"))
  expect_error(parallel::clusterMap(cl, f, c(a = 1, b = 2, c = 3), 1:2, RECYCLE = FALSE),
               "'names' attribute [3] must be the same length as the vector [2]", fixed = TRUE)
  expect_identical(pool_map(f, c("p", "q", "r"), 1:2, RECYCLE = FALSE),
                   parallel::clusterMap(cl, f, c("p", "q"), 1:2, RECYCLE = FALSE))
  expect_error(parallel::clusterMap(cl, f, c("p", "q", "r"), 1:2, RECYCLE = FALSE),
               "'names' attribute", fixed = TRUE)
  # the first input no longer than the others: the same in both
  expect_identical(pool_map(f, c(a = 1, b = 2), 1:3, RECYCLE = FALSE),
                   parallel::clusterMap(cl, f, c(a = 1, b = 2), 1:3, RECYCLE = FALSE))
})

test_that("difference 8: a named zero-length X keeps its empty names, as lapply() keeps them", {
  local_pool()
  cl <- local_psock()
  f <- global_task(function(x) x)
  for (X in list(setNames(list(), character()), setNames(integer(), character()),
                 data.frame())) {
    info <- paste(deparse(X), collapse = "")
    expect_identical(pool_lapply(X, f), lapply(X, f), info = info)
    expect_identical(pool_lapply(X, f), setNames(list(), character()), info = info)
    expect_identical(pool_sapply(X, f), sapply(X, f), info = info)
    expect_identical(parallel::parLapply(cl, X, f), list(), info = info)
    expect_identical(parallel::parSapply(cl, X, f), list(), info = info)
  }
})

test_that("difference 9: pool_lapply() takes as.list() of an environment, where parLapply() fails", {
  local_pool()
  cl <- local_psock()
  env <- list2env(list(a = 1, b = "two"))
  f <- global_task(function(x) x)
  expect_identical(pool_lapply(env, f), lapply(as.list(env), f))
  expect_error(parallel::parLapply(cl, env, f), "not subsettable")
  # parSapply() takes as.list() of X itself, so there both agree
  expect_identical(pool_sapply(env, f), parallel::parSapply(cl, env, f))
})

test_that("difference 10: the workers have bgpool loaded, and all that PSOCK workers load but parallel", {
  local_pool()
  cl <- local_psock()
  ours <- pool_evalq(loadedNamespaces())
  theirs <- parallel::clusterEvalQ(cl, loadedNamespaces())
  # parallel runs PSOCK's worker loop; bgpool's workers load it when a task uses it
  for (j in seq_along(ours)) {
    expect_true("bgpool" %in% ours[[j]])
    expect_false("bgpool" %in% theirs[[j]])
    expect_identical(setdiff(theirs[[j]], c(ours[[j]], "parallel")), character())
  }
  expect_identical(pool_evalq(search()), parallel::clusterEvalQ(cl, search()))
  expect_identical(pool_evalq(parallel::nextRNGStream(c(10407L, 1:6))),
                   parallel::clusterEvalQ(cl, parallel::nextRNGStream(c(10407L, 1:6))))
})

test_that("difference 11: pool_export() of a missing variable exports nothing; clusterExport() what came before it", {
  local_pool()
  cl <- local_psock()
  diff_before <- "exported first"
  err <- expect_error(pool_export(c("diff_before", "diff_missing"), envir = environment()),
                      class = "bgpool_bad_argument")
  expect_match(conditionMessage(err), "diff_missing", fixed = TRUE)
  expect_error(parallel::clusterExport(cl, c("diff_before", "diff_missing"), envir = environment()),
               "object 'diff_missing' not found", fixed = TRUE)
  expect_identical(pool_evalq(exists("diff_before")), rep(list(FALSE), 2L))
  expect_identical(parallel::clusterEvalQ(cl, exists("diff_before")), rep(list(TRUE), 2L))
})

# --- where bgpool differs from parallel without meaning to -----------------------

# bgpool promises parallel's behaviour in each of these; they fail until it
# keeps the promise.

test_that("a function named for pool_lapply() and pool_map() is found as parLapply() and clusterMap() find it, also when the workers' globals shadow base", {
  local_pool()
  cl <- local_psock()
  definition <- quote(sqrt <- function(x) "the worker's")
  eval(bquote(pool_evalq(.(definition))))
  eval(bquote(parallel::clusterEvalQ(cl, .(definition))))
  expect_identical(pool_call("sqrt", 4), parallel::clusterCall(cl, "sqrt", 4))
  expect_identical(pool_lapply(4, "sqrt"), parallel::parLapply(cl, 4, "sqrt"))
  expect_identical(pool_map("sqrt", 4), parallel::clusterMap(cl, "sqrt", 4))
})

test_that("a pool_lapply() task's calling frame holds `...` also without extra arguments, as lapply()'s does", {
  local_pool()
  cl <- local_psock()
  dots <- global_task(function(x) {
    list(exists("...", envir = parent.frame(), inherits = FALSE),
         eval(quote(list(...)), parent.frame()))
  })
  expect_identical(outcome(pool_lapply(1:2, dots)), outcome(parallel::parLapply(cl, 1:2, dots)))
  names_all <- global_task(function(x) sort(ls(parent.frame(), all.names = TRUE)))
  expect_identical(pool_lapply(1:2, names_all), parallel::parLapply(cl, 1:2, names_all))
})

test_that("arguments reach pool_lapply() and pool_map() tasks quoted as do.call() quotes them", {
  local_pool()
  cl <- local_psock()
  expression_of <- global_task(function(x, y) c(deparse(substitute(x)), deparse(substitute(y))))
  expect_identical(pool_map(expression_of, 1:2, MoreArgs = list(y = 3)),
                   parallel::clusterMap(cl, expression_of, 1:2, MoreArgs = list(y = 3)))
  expect_identical(pool_lapply(1:2, expression_of, 3),
                   parallel::parLapply(cl, 1:2, expression_of, 3))
  expect_identical(pool_call(expression_of, 1, 3), parallel::clusterCall(cl, expression_of, 1, 3))
  # which shows where functions name things after their arguments' expressions
  expect_identical(pool_map(data.frame, 1:2), parallel::clusterMap(cl, data.frame, 1:2))
})

test_that("with bgpool.share_threshold = 0, values without data to share export as clusterExport() sends them", {
  local_pool()
  cl <- local_psock()
  withr::local_options(bgpool.share_threshold = 0)
  values <- list(integer(), numeric(), setNames(logical(), character()), "a",
                 matrix(c("a", "b"), 1L), list(1), data.frame(a = 1:2), NULL, 1:3)
  for (diff_value in values) {
    info <- paste(deparse(diff_value), collapse = "")
    expect_identical(outcome(pool_export("diff_value", envir = environment())),
                     list(value = NULL), info = info)
    parallel::clusterExport(cl, "diff_value", envir = environment())
    expect_identical(outcome(pool_evalq(diff_value)),
                     outcome(parallel::clusterEvalQ(cl, diff_value)), info = info)
  }
})
