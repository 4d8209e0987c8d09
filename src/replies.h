// Reading workers' replies, shared by the scheduler, the cluster nodes and
// the clean-up between calls: every wait for a worker goes through here.
#pragma once

#include <Rcpp.h>

#include <vector>

#include "pool.h"

namespace bgpool {

enum class Arrival {
  Nothing,  // no whole reply yet
  Reply,    // a whole reply to a live request is in w.conn->message()
  Failed,   // the link failed (see w.conn->failure())
};

// Takes in what `w` has sent, without waiting: drops the replies it owes
// to abandoned calls (the oldest), then says whether a whole reply to one
// of the requests still awaited has come.
Arrival take_input(Worker& w);

// Waits until one of `workers` has something to read (or has failed), or
// `deadline` (monotonic seconds; < 0: none) passes, sending meanwhile what
// waits to go out to them. An interrupt is raised (R jumps). Returns the
// workers that have something.
std::vector<Worker*> wait_workers(const std::vector<Worker*>& workers, double deadline);

// The reply that take_input() found, decoded; its message is released.
Rcpp::List take_reply(Worker& w);

}  // namespace bgpool
