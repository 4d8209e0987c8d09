// Calls addressed to one worker; see nodes.h.
#include "nodes.h"

#include "interrupts.h"
#include "node_connection.h"
#include "protocol.h"
#include "replies.h"
#include "scheduler.h"
#include "serialize.h"

namespace bgpool {

namespace {

SEXP node_reply(SEXP tag, SEXP reply, SEXP lost) {
  return Rcpp::List::create(Rcpp::Named("tag") = tag, Rcpp::Named("reply") = reply,
                            Rcpp::Named("lost") = lost);
}

// What future's socketSelect() sees: ready while a reply waits to be
// taken, or when the worker is gone (reading then says how); otherwise the
// worker's own socket.
void refresh_poll(Pool& pool, Worker& w) {
  if (!w.poll_fd) return;
  *w.poll_fd = !w.node_replies.empty() || !w.usable() ? pool.ready_fd() : w.conn->fd();
}

// The worker is gone: each call it owed becomes a reply saying so.
void fail_calls(Pool& pool, Worker& w) {
  std::string how = pool.retire(w);
  Rcpp::List lost = Rcpp::List::create(
      Rcpp::Named("worker") = w.slot + 1, Rcpp::Named("pid") = w.pid, Rcpp::Named("how") = how,
      Rcpp::Named("host") = pool.host_name(w),
      Rcpp::Named("output") = pool.log_tail(w));
  for (const NodeCall& call : w.node_calls)
    w.node_replies.push_back(node_reply(call.tag, R_NilValue, lost));
  w.node_calls.clear();
  refresh_poll(pool, w);
}

// Takes in what `w` has sent; true when a reply was kept or the worker
// was found gone.
bool take(Pool& pool, Worker& w) {
  switch (take_input(w)) {
    case Arrival::Nothing:
      return false;
    case Arrival::Failed:
      fail_calls(pool, w);
      return true;
    case Arrival::Reply:
      break;
  }
  Rcpp::List reply = take_reply(w);
  NodeCall call = w.node_calls.front();
  w.node_calls.pop_front();
  if (Rcpp::as<double>(reply[protocol::kReplyCall]) != call.call_id) {
    w.conn->mark_broken("a reply out of order");
    w.node_calls.push_front(call);
    fail_calls(pool, w);
    return true;
  }
  w.node_replies.push_back(node_reply(call.tag, reply, R_NilValue));
  refresh_poll(pool, w);
  return true;
}

// An interrupt (or an R error) while the cluster waits abandons all of its
// calls: parallel would read their replies as answers to later calls.
class AbandonOnUnwind {
 public:
  explicit AbandonOnUnwind(Pool& pool) : pool_(pool) {}
  ~AbandonOnUnwind() {
    if (done_) return;
    for (int i = 0; i < pool_.size(); ++i) {
      Worker& w = pool_.worker(i);
      if (!w.node_calls.empty()) pool_.cancel(w, w.node_calls.back().call_id);
      w.node_calls.clear();  // their replies are owed still: dropped unread
      w.node_replies.clear();
      refresh_poll(pool_, w);
    }
  }
  void done() { done_ = true; }

 private:
  Pool& pool_;
  bool done_ = false;
};

SEXP take_kept(Pool& pool, Worker& w) {
  Rcpp::RObject reply = w.node_replies.front();
  w.node_replies.pop_front();
  refresh_poll(pool, w);
  return reply;
}

[[noreturn]] void nothing_awaited() {
  Rcpp::stop(
      "parallel asked the pool's cluster for a reply, but no call is waiting for one (it was "
      "abandoned by an interrupt, or the pool was reset); run the call again");
}

}  // namespace

void node_send(Pool& pool, int slot, SEXP fun, SEXP args, SEXP tag) {
  AbandonOnUnwind guard(pool);
  Worker& w = pool.worker(slot);
  double call_id = pool.next_call_id();
  SharedCopies copies;
  Rcpp::List message = call_request(call_id, fun, copies.share(args, pool.share_threshold()),
                                    pool.share_threshold());
  bool sent = w.usable() && write_message(*w.conn, message);
  w.node_calls.push_back({call_id, tag});
  if (!sent) fail_calls(pool, w);
  interrupts::raise_pending();
  guard.done();
}

SEXP node_receive(Pool& pool, int slot) {
  AbandonOnUnwind guard(pool);
  Worker& w = pool.worker(slot);
  while (w.node_replies.empty()) {
    if (w.node_calls.empty()) {
      guard.done();
      nothing_awaited();
    }
    if (!take(pool, w)) wait_workers({&w}, -1);
  }
  guard.done();
  return take_kept(pool, w);
}

SEXP node_receive_any(Pool& pool, const std::vector<int>& slots) {
  AbandonOnUnwind guard(pool);
  for (;;) {
    std::vector<Worker*> waiting;
    for (int slot : slots) {
      Worker& w = pool.worker(slot);
      if (w.node_replies.empty() && !w.node_calls.empty() && !take(pool, w))
        waiting.push_back(&w);
      if (!w.node_replies.empty()) {
        guard.done();
        return Rcpp::List::create(Rcpp::Named("slot") = slot + 1,
                                  Rcpp::Named("reply") = take_kept(pool, w));
      }
    }
    if (waiting.empty()) {
      guard.done();
      nothing_awaited();
    }
    wait_workers(waiting, -1);
  }
}

bool node_busy(Pool& pool) {
  for (int i = 0; i < pool.size(); ++i)
    if (!pool.worker(i).node_calls.empty()) return true;
  return false;
}

void node_collect(Pool& pool) {
  AbandonOnUnwind guard(pool);
  for (;;) {
    std::vector<Worker*> waiting;
    for (int i = 0; i < pool.size(); ++i) {
      Worker& w = pool.worker(i);
      while (!w.node_calls.empty() && take(pool, w)) {
      }
      if (!w.node_calls.empty()) waiting.push_back(&w);
    }
    if (waiting.empty()) break;
    wait_workers(waiting, -1);
  }
  guard.done();
}

void node_settle(Pool& pool) {
  pool.check_workers();
  for (int i = 0; i < pool.size(); ++i) {
    Worker& w = pool.worker(i);
    if (!w.usable() && !w.node_calls.empty()) fail_calls(pool, w);
  }
}

SEXP node_connection(Pool& pool, int slot) {
  Worker& w = pool.worker(slot);
  SEXP con = PROTECT(new_poll_connection(pool.ready_fd(), &w.poll_fd));
  refresh_poll(pool, w);
  UNPROTECT(1);
  return con;
}

}  // namespace bgpool
