# Reproducible random numbers: L'Ecuyer-CMRG streams as parallel makes
# them, stream k + 1 being parallel::nextRNGStream() of stream k. The
# workers compute the streams they need natively (rng_jump(), src/rng.cpp).

# The first stream for `seed`: the .Random.seed that
# set.seed(seed, kind = "L'Ecuyer-CMRG") leaves, computed without changing
# the session's generator (state or kind). NULL for NULL; TRUE takes the
# seed from the session's generator, so set.seed() makes it reproducible.
seed_stream <- function(seed, caller, arg) {
  if (is.null(seed)) return(NULL)
  if (isTRUE(seed)) seed <- sample.int(.Machine$integer.max, 1L)
  if (!is.numeric(seed) || length(seed) != 1L || !is.finite(seed) ||
      abs(seed) > .Machine$integer.max)
    abort(sprintf("%s: `%s` must be NULL (no seeding), TRUE (a seed drawn from the session's random numbers) or a single number as for set.seed(), not %s",
                  caller, arg, deparse1(seed, nlines = 1L)), "bgpool_bad_argument")
  saved <- rng_state()
  on.exit(restore_rng(saved))
  set.seed(seed, kind = "L'Ecuyer-CMRG")
  get(".Random.seed", envir = globalenv())
}

# The generator's state in this process, for restore_rng(): its kind, and
# its .Random.seed if there is one (none until random numbers are drawn).
rng_state <- function() {
  list(kind = RNGkind(), seed = get0(".Random.seed", envir = globalenv(), inherits = FALSE))
}

# The kind is set as well as the seed: R takes the kind from .Random.seed
# only when it next reads it, and without one, a new seed from the clock
# then has the kind R last used.
restore_rng <- function(state) {
  suppressWarnings(RNGkind(state$kind[1L], state$kind[2L], state$kind[3L]))
  if (is.null(state$seed)) rm(".Random.seed", envir = globalenv())
  else assign(".Random.seed", state$seed, envir = globalenv())
  invisible(NULL)
}

# Gives worker j of the pool stream j of `seed` (a first stream), as
# parallel::clusterSetRNGStream() does.
seed_workers <- function(caller, seed) {
  for (j in seq_len(pool_size()))
    on_workers(caller, assign, list(".Random.seed", rng_jump(seed, j - 1), envir = globalenv()), j)
  invisible(NULL)
}
