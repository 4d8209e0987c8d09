// Handing work to the pool's workers and gathering what comes back.
#pragma once

#include <Rcpp.h>

#include <vector>

#include "pool.h"

namespace bgpool {

// Applies a job (function and fixed arguments) to n elements, a chunk of
// consecutive elements per message, each chunk to whichever worker is free.
// `inputs` is the element vector (lapply) or a list of vectors recycled to
// n (map). `chunk_size` 0 sizes chunks adaptively. A task running longer
// than `timeout` seconds (if > 0) has its worker stopped.
//
// A worker lost (it died, its link broke, or it was stopped at the time
// limit) costs its elements an attempt: `attempts` (NULL, or how many each
// element has had before) counts them. With `retry` 0 the call stops at
// the first loss; otherwise the elements that still have attempts left go
// back to the queue, for the workers that remain, and the call goes on
// until none remain.
//
// `progress`, an R function or NULL, is called with the number of elements
// done as results arrive (at most every kProgressSeconds) and at the end.
//
// Returns list(values, finished, failed, errors, warnings, losses,
// attempts) as R/run.R describes it.
SEXP run_elements(Pool& pool, SEXP job, SEXP inputs, bool is_map, R_xlen_t n,
                  R_xlen_t chunk_size, double timeout, int retry, SEXP attempts,
                  SEXP progress);

// Calls `fun` with `args` once on each of the workers in `slots`; returns
// the same list as run_elements(), an element per worker. Large vectors in
// `args` travel as one shared copy for all.
SEXP run_on_workers(Pool& pool, SEXP fun, SEXP args, const std::vector<int>& slots);

// The request to call fun(args) once (protocol.h).
Rcpp::List call_request(double call_id, SEXP fun, SEXP args, double share_threshold);

// Reads and drops the replies still owed for abandoned calls. A worker that
// still owes some `grace` seconds after it was told to drop its work (stuck
// in code that never checks for interrupts) is killed, to be replaced.
void settle(Pool& pool, double grace);

}  // namespace bgpool
