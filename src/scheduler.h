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
// than `timeout` seconds (if > 0) has its worker stopped. `progress`, an R
// function or NULL, is called with the number of elements done as results
// arrive (at most every kProgressSeconds) and once at the end. Returns the
// list described in R/run.R: values in input order, failures, warnings,
// and the worker lost (if any), with every finished result kept.
SEXP run_elements(Pool& pool, SEXP job, SEXP inputs, bool is_map, R_xlen_t n,
                  R_xlen_t chunk_size, double timeout, SEXP progress);

// Calls fun with args once on each of the workers in `slots`, passing each
// the file descriptors `fds` (shared segments) with the message.
SEXP run_on_workers(Pool& pool, SEXP fun, SEXP args, const std::vector<int>& slots,
                    const std::vector<int>& fds);

// Reads and drops the replies still owed for abandoned calls. A worker that
// still owes some `grace` seconds after it was told to drop its work (stuck
// in code that never checks for interrupts) is killed, to be replaced.
void settle(Pool& pool, double grace);

}  // namespace bgpool
