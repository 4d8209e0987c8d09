// Calls addressed to one worker, for the node interface that parallel's
// cluster functions dispatch on (R/cluster.R): a call is sent at once and
// its reply read when R asks for it, so the nodes run side by side.
#include <poll.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "scheduler.h"
#include "serialize.h"

namespace bgpool {

namespace {

SEXP lost(Pool& pool, Worker& w, const std::string& how, bool with_output = true) {
  return Rcpp::List::create(Rcpp::Named("lost") = Rcpp::List::create(
      Rcpp::Named("worker") = w.slot + 1, Rcpp::Named("pid") = w.pid,
      Rcpp::Named("how") = how,
      Rcpp::Named("output") = with_output ? pool.log_tail(w) : std::string()));
}

SEXP retire(Pool& pool, Worker& w) {
  std::string how = pool.retire(w);
  w.node_calls.clear();
  w.stale_replies = 0;
  return lost(pool, w, how);
}

}  // namespace

SEXP node_send(Pool& pool, int slot, SEXP fun, SEXP args) {
  Worker& w = pool.worker(slot);
  double call_id = pool.next_call_id();
  Rcpp::List message = Rcpp::List::create(kOpCall, call_id, fun, args);
  if (!w.usable() || !write_message(*w.conn, message)) {
    if (w.conn && w.conn->interrupted()) throw Interrupted();
    return retire(pool, w);
  }
  w.node_calls.push_back(call_id);
  return R_NilValue;
}

int node_wait(Pool& pool, const std::vector<int>& slots, double timeout) {
  InterruptCheck check_interrupt;
  double deadline = timeout < 0 ? std::numeric_limits<double>::infinity()
                                : monotonic_seconds() + timeout;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<int> owners;
    for (int slot : slots) {
      Worker& w = pool.worker(slot);
      if (w.node_calls.empty()) continue;
      if (!w.usable() || w.conn->has_buffered_input()) return slot;
      fds.push_back({w.conn->fd(), POLLIN, 0});
      owners.push_back(slot);
    }
    double left = deadline - monotonic_seconds();
    if (fds.empty() || left <= 0) return -1;
    int wait_ms = static_cast<int>(std::ceil(std::min(left, kInterruptCheckSeconds) * 1000));
    int rc = poll(fds.data(), fds.size(), wait_ms);
    check_interrupt();
    if (rc > 0) {
      for (size_t i = 0; i < fds.size(); ++i)
        if (fds[i].revents) return owners[i];
    }
  }
}

SEXP node_receive(Pool& pool, int slot) {
  Worker& w = pool.worker(slot);
  // The worker that had the call died and was replaced since.
  if (w.node_calls.empty())
    return lost(pool, w, "died and was replaced before its reply was read", false);
  for (;;) {
    if (!w.usable() || !w.conn->begin_message()) {
      if (w.conn && w.conn->interrupted()) throw Interrupted();
      return retire(pool, w);
    }
    Rcpp::List reply(read_message(*w.conn));
    // replies owed for abandoned calls come first
    if (w.stale_replies > 0) {
      --w.stale_replies;
      continue;
    }
    double expected = w.node_calls.front();
    w.node_calls.pop_front();
    if (Rcpp::as<double>(reply[kReplyCall]) != expected) {
      w.conn->mark_broken("a reply out of order");
      return retire(pool, w);
    }
    return reply;
  }
}

void node_cancel(Pool& pool, const std::vector<int>& slots) {
  for (int slot : slots) {
    Worker& w = pool.worker(slot);
    if (w.node_calls.empty()) continue;
    pool.cancel(w, w.node_calls.front());
    w.stale_replies += static_cast<int>(w.node_calls.size());
    w.node_calls.clear();
  }
}

}  // namespace bgpool
