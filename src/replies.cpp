// Reading workers' replies; see replies.h.
#include "replies.h"

#include "interrupts.h"
#include "serialize.h"
#include "wait.h"

namespace bgpool {

Arrival take_input(Worker& w) {
  if (!w.conn || w.conn->broken()) return Arrival::Failed;
  for (;;) {
    bool stale = w.stale() > 0;
    if (!stale && w.owed() == 0) return Arrival::Nothing;
    Connection::Status status = stale ? w.conn->discard(false) : w.conn->read_available();
    if (status == Connection::Status::Failed) return Arrival::Failed;
    if (status != Connection::Status::Complete) return Arrival::Nothing;
    if (!stale) return Arrival::Reply;
  }
}

std::vector<Worker*> wait_workers(const std::vector<Worker*>& workers, double deadline) {
  std::vector<Worker*> ready;
  std::vector<pollfd> fds;
  for (Worker* w : workers) {
    if (!w->conn || w->conn->broken() || w->conn->has_input()) {
      ready.push_back(w);
      continue;
    }
    short events = POLLIN;
    if (w->conn->has_pending_output()) events |= POLLOUT;
    fds.push_back({w->conn->fd(), events, 0});
  }
  if (!ready.empty() || fds.empty()) return ready;
  if (wait_fds(fds.data(), fds.size(), deadline, interrupts::poll) == WaitResult::Interrupted)
    interrupts::raise_pending();
  size_t next = 0;
  for (Worker* w : workers) {
    if (!w->conn || w->conn->broken() || w->conn->has_input()) continue;
    const pollfd& p = fds[next++];
    if (p.revents & POLLOUT) w->conn->flush();
    if (p.revents & ~POLLOUT || w->conn->broken()) ready.push_back(w);
  }
  return ready;
}

Rcpp::List take_reply(Worker& w) {
  // Released even if decoding fails: the message was read whole.
  struct Release {
    Connection& conn;
    ~Release() { conn.release_message(); }
  } release{*w.conn};
  return Rcpp::List(read_value(*w.conn));
}

}  // namespace bgpool
