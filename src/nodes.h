// Calls addressed to one worker, for the node interface that parallel's
// cluster functions dispatch on (R/cluster.R). A node's state (the calls
// awaiting replies, the replies read but not yet asked for) lives here
// only; the R methods forward to these. A call is sent at once and its
// reply read when R asks (or earlier, to free the worker for a pool call),
// so nodes run side by side. Slots are 0-based.
#pragma once

#include <Rcpp.h>

#include <vector>

#include "pool.h"

namespace bgpool {

// Sends do.call(fun, args) to the worker in `slot`; its reply will carry
// `tag` back. A worker that cannot take it makes that reply a loss.
void node_send(Pool& pool, int slot, SEXP fun, SEXP args, SEXP tag);
// The oldest reply for `slot`, waiting for it: list(tag, reply, lost),
// `reply` as protocol.h describes it, or `lost` saying how the worker was.
SEXP node_receive(Pool& pool, int slot);
// The first reply for any of `slots`: list(slot, tag, reply, lost).
SEXP node_receive_any(Pool& pool, const std::vector<int>& slots);
// Whether any call awaits its reply.
bool node_busy(Pool& pool);
// Reads the replies of all calls awaiting them into their nodes, so that
// their workers are free for another call.
void node_collect(Pool& pool);
// Turns the calls awaited from workers that died into losses, so that
// those workers can be replaced.
void node_settle(Pool& pool);
// The R connection that polls as ready when `slot` has a reply to read.
SEXP node_connection(Pool& pool, int slot);

}  // namespace bgpool
