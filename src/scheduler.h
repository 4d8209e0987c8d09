// Handing work to the pool's workers and gathering what comes back.
#pragma once

#include <Rcpp.h>

#include <vector>

#include "clock.h"
#include "pool.h"

namespace bgpool {

// Messages to workers (R/worker.R): a chunk of elements, or one call.
constexpr int kOpChunk = 1;
constexpr int kOpCall = 2;
// Reply layout (R/worker.R): list(call_id, start, values, error, elapsed, warnings)
enum ReplyField { kReplyCall, kReplyStart, kReplyValues, kReplyError, kReplyElapsed, kReplyWarnings };

constexpr double kInterruptCheckSeconds = 0.1;

// Calls check_user_interrupt() at most every kInterruptCheckSeconds.
class InterruptCheck {
 public:
  void operator()() {
    double now = monotonic_seconds();
    if (now - last_ < kInterruptCheckSeconds) return;
    last_ = now;
    check_user_interrupt();
  }

 private:
  double last_ = monotonic_seconds();
};

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

// Calls addressed to one worker, for parallel's node interface
// (R/cluster.R); slots are 0-based.
// Sends do.call(fun, args); NULL when sent, else how the worker was lost.
SEXP node_send(Pool& pool, int slot, SEXP fun, SEXP args);
// Waits up to `timeout` seconds (< 0: no limit) for one of `slots` to have
// a reply to read (or to have failed); returns it, or -1.
int node_wait(Pool& pool, const std::vector<int>& slots, double timeout);
// The reply to the oldest call owed by `slot` (see R/worker.R), or
// list(lost = how the worker was lost).
SEXP node_receive(Pool& pool, int slot);
// Abandons the calls owed by `slots`: their workers are told to drop them
// and the replies are dropped when they come.
void node_cancel(Pool& pool, const std::vector<int>& slots);

}  // namespace bgpool
