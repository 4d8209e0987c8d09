// Running tasks as parallel runs them, in the frames and with the calls of
// parLapply(), clusterMap() and clusterCall(). Native workers use this, and
// so do the workers of the "psock" backend (R/backend-psock.R), parallel's
// socket workers: it needs R's API only and is built on every platform.
#pragma once

#include <Rinternals.h>

// do.call(fun, args, quote = TRUE) as clusterCall() makes it (tasks.cpp).
SEXP worker_call(SEXP fun, SEXP args);

namespace bgpool {

// Forgets the chunk that ran (its values), once its reply is sent.
void forget_chunk();

}  // namespace bgpool
