#' Options that tune the background pool
#'
#' bgpool reads these [options()] when it needs them; none is required.
#'
#' * `bgpool.retry`, `bgpool.timeout`, `bgpool.progress`, `bgpool.seed`:
#'   the defaults of the `.retry`, `.timeout`, `.progress` and `.seed`
#'   arguments of [pool_lapply()], [pool_sapply()] and [pool_map()]
#'   (`0`, `Inf`, `NULL`, `NULL`).
#' * `bgpool.start_timeout`: seconds the workers may take to start
#'   (default 60), unless [init_pool()] is given `setup_timeout`.
#' * `bgpool.share_threshold`: the size in bytes from which an exported
#'   vector (of a type with fixed-size elements: double, integer, logical,
#'   complex, raw) is shared through memory that every worker maps, rather
#'   than copied to each (default `1e6`). `Inf` copies always.
#' * `bgpool.cancel_grace`: seconds a worker may take to drop the work of a
#'   call that was interrupted or ended early, before it is stopped and
#'   replaced (default 1). A task in code that never checks for
#'   interrupts (a long C routine) needs the worker stopped.
#' * `bgpool.max_setup_steps`: how many exports, [pool_call()] and
#'   [pool_evalq()] calls are recorded, since [init_pool()], to set up a
#'   worker that replaces a dead one (default 10000). Past that, a worker
#'   that dies cannot be replaced with the same set-up, and the call that
#'   would need it fails, saying so.
#' * `bgpool.log_limit`: the size in bytes to which a worker's own log may
#'   grow (default `1e7`); past it, only the log's last part is kept. `0`
#'   keeps everything. A file given as `init_pool(outfile = )` is the
#'   user's and is never trimmed.
#' * `bgpool.backend`: what runs the pool, read by [init_pool()] when it
#'   creates one. `"native"` (the default on Linux and macOS): bgpool's own
#'   core, with workers forked from a template process, Unix sockets and
#'   shared memory. `"psock"` (the default, and the only one, on Windows):
#'   a `parallel` socket cluster, as AzureRMR's pool is, with the same
#'   functions, errors, `.retry`, `.timeout`, `.progress` and `.seed`; its
#'   workers start as separate R processes and exchange values over
#'   localhost TCP, a worker past `.timeout` (or whose call was
#'   interrupted) is killed and replaced rather than cancelled (README,
#'   "Platforms", lists the other differences). Without the option, the
#'   environment variable `BGPOOL_BACKEND` is read.
#'
#' @name bgpool_options
#' @examples
#' op <- options(bgpool.retry = 1, bgpool.timeout = 60)
#' getOption("bgpool.retry")
#' options(op)
NULL
