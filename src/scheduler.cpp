// Dynamic scheduling with adaptive chunks and a short pipeline per worker.
//
// Every worker keeps up to kDepth messages queued so it never idles waiting
// for the master. Chunk sizes follow guided self-scheduling (a share of
// what remains, so the tail is balanced), capped so that a chunk takes
// about kTargetChunkSeconds by the workers' own timing: tiny tasks travel
// in large batches, long tasks one at a time.
//
// A call that ends early (a worker lost, an interrupt, an R error while
// waiting) tells the workers still busy with it to drop that work; their
// replies, still owed, are read and dropped before the next call's.
#include "scheduler.h"

#include <poll.h>

#include <algorithm>
#include <cmath>
#include <deque>

#include "clock.h"
#include "serialize.h"

namespace bgpool {

namespace {

constexpr int kDepth = 2;
constexpr double kTargetChunkSeconds = 0.002;
constexpr double kMinChunkSeconds = 0.0005;
constexpr double kProgressSeconds = 0.1;

// Copies x[from + i] (recycling x when shorter) for i < len into a new
// vector of x's type, without attributes: only elements travel.
SEXP slice(SEXP x, R_xlen_t from, R_xlen_t len) {
  R_xlen_t xlen = XLENGTH(x);
  SEXP out = PROTECT(Rf_allocVector(TYPEOF(x), len));
  bool contiguous = from + len <= xlen;
  switch (TYPEOF(x)) {
    case LGLSXP:
    case INTSXP:
    case REALSXP:
    case CPLXSXP:
    case RAWSXP:
      if (contiguous) {
        // *_GET_REGION reads ALTREP vectors without expanding them.
        switch (TYPEOF(x)) {
          case LGLSXP: LOGICAL_GET_REGION(x, from, len, LOGICAL(out)); break;
          case INTSXP: INTEGER_GET_REGION(x, from, len, INTEGER(out)); break;
          case REALSXP: REAL_GET_REGION(x, from, len, REAL(out)); break;
          case CPLXSXP: COMPLEX_GET_REGION(x, from, len, COMPLEX(out)); break;
          default: RAW_GET_REGION(x, from, len, RAW(out)); break;
        }
      } else {
        for (R_xlen_t i = 0; i < len; ++i) {
          R_xlen_t j = (from + i) % xlen;
          switch (TYPEOF(x)) {
            case LGLSXP: LOGICAL(out)[i] = LOGICAL_ELT(x, j); break;
            case INTSXP: INTEGER(out)[i] = INTEGER_ELT(x, j); break;
            case REALSXP: REAL(out)[i] = REAL_ELT(x, j); break;
            case CPLXSXP: COMPLEX(out)[i] = COMPLEX_ELT(x, j); break;
            default: RAW(out)[i] = RAW_ELT(x, j); break;
          }
        }
      }
      break;
    case STRSXP:
      for (R_xlen_t i = 0; i < len; ++i) SET_STRING_ELT(out, i, STRING_ELT(x, (from + i) % xlen));
      break;
    case VECSXP:
    case EXPRSXP:
      for (R_xlen_t i = 0; i < len; ++i) SET_VECTOR_ELT(out, i, VECTOR_ELT(x, (from + i) % xlen));
      break;
    default:
      UNPROTECT(1);
      Rcpp::stop("bgpool: cannot split an input of type %s", Rf_type2char(TYPEOF(x)));
  }
  UNPROTECT(1);
  return out;
}

// Tells an R function (or nobody, for NULL) how many elements are done, at
// most every kProgressSeconds unless the report is final: a progress bar
// must not cost tiny tasks a call into R per chunk.
class Progress {
 public:
  explicit Progress(SEXP callback) : callback_(callback) {}

  void report(double done, bool final = false) {
    if (callback_ == R_NilValue) return;
    double now = monotonic_seconds();
    if (!final && now - last_ < kProgressSeconds) return;
    last_ = now;
    // Rcpp::Function evaluates under unwind protection: an R error or an
    // interrupt in the callback unwinds through the call's destructors.
    Rcpp::Function callback(callback_);
    callback(done);
  }

 private:
  SEXP callback_;
  double last_ = monotonic_seconds();
};

// State of one call: results in input order, failures, and bookkeeping.
class Gather {
 public:
  Gather(Pool& pool, R_xlen_t n, double timeout, SEXP progress = R_NilValue)
      : pool_(pool), values_(n), done_(n), timeout_(timeout), progress_(progress) {
    std::fill(done_.begin(), done_.end(), FALSE);
    call_id_ = pool.next_call_id();
  }

  // However the call ends, workers still busy with it are told to drop it.
  ~Gather() {
    for (int i = 0; i < pool_.size(); ++i) {
      Worker& w = pool_.worker(i);
      if (w.in_flight.empty()) continue;
      pool_.cancel(w, call_id_);
      w.stale_replies += static_cast<int>(w.in_flight.size());
      w.in_flight.clear();
    }
  }

  double call_id() const { return call_id_; }
  bool lost() const { return lost_ != R_NilValue; }
  // Seconds per element, from the latest chunk: the first chunks of a call
  // also pay for compiling the function, which must not keep chunks small.
  double estimate() const { return estimate_; }

  bool send(Worker& w, SEXP message, Range range) {
    if (!w.usable()) return worker_lost(w, false);
    if (!write_message(*w.conn, message)) {
      if (w.conn->interrupted()) throw Interrupted();
      return worker_lost(w, false);
    }
    if (w.awaiting() == 0) w.busy_since = monotonic_seconds();
    w.in_flight.push_back(range);
    return true;
  }

  bool awaiting_replies() const {
    for (int i = 0; i < pool_.size(); ++i)
      if (!pool_.worker(i).in_flight.empty()) return true;
    return false;
  }

  // Waits for one message from a worker that owes replies and handles it;
  // elements after one that failed go back to `requeue`.
  void receive(std::deque<Range>& requeue) {
    Worker* ready = nullptr;
    while (!ready && !lost()) ready = wait_ready();
    if (!ready) return;
    Worker& w = *ready;
    if (!w.conn->begin_message()) {
      if (w.conn->interrupted()) throw Interrupted();
      worker_lost(w, false);
      return;
    }
    Rcpp::List reply(read_message(*w.conn));
    if (w.stale_replies > 0) {
      --w.stale_replies;
    } else {
      Range range = w.in_flight.front();
      w.in_flight.pop_front();
      if (Rcpp::as<double>(reply[kReplyCall]) != call_id_) {
        w.conn->mark_broken("a reply out of order");
        worker_lost(w, false);
        return;
      }
      store(range, reply, requeue);
      progress_.report(finished_);
    }
    w.busy_since = monotonic_seconds();
  }

  void final_progress() { progress_.report(finished_, true); }

  SEXP result() {
    Rcpp::List errors(errors_.begin(), errors_.end());
    Rcpp::List warnings(warnings_.begin(), warnings_.end());
    return Rcpp::List::create(
        Rcpp::Named("values") = values_, Rcpp::Named("done") = done_,
        Rcpp::Named("failed") = Rcpp::IntegerVector(failed_.begin(), failed_.end()),
        Rcpp::Named("errors") = errors, Rcpp::Named("warnings") = warnings,
        Rcpp::Named("lost") = lost_);
  }

 private:
  Worker* wait_ready() {
    std::vector<pollfd> fds;
    std::vector<Worker*> owners;
    double now = monotonic_seconds();
    int wait_ms = static_cast<int>(kInterruptCheckSeconds * 1000);
    for (int i = 0; i < pool_.size(); ++i) {
      Worker& w = pool_.worker(i);
      if (w.awaiting() == 0 || !w.conn) continue;
      if (w.conn->broken()) {
        worker_lost(w, false);
        return nullptr;
      }
      if (timeout_ > 0 && w.stale_replies == 0 && !w.in_flight.empty()) {
        double left = w.busy_since + timeout_ - now;
        if (left <= 0) {
          worker_lost(w, true);
          return nullptr;
        }
        wait_ms = std::min(wait_ms, static_cast<int>(std::ceil(left * 1000)));
      }
      if (w.conn->has_buffered_input()) return &w;
      fds.push_back({w.conn->fd(), POLLIN, 0});
      owners.push_back(&w);
    }
    if (fds.empty()) Rcpp::stop("bgpool: internal error: waiting with nothing in flight");
    int rc = poll(fds.data(), fds.size(), wait_ms);
    check_interrupt_();
    if (rc > 0) {
      for (size_t i = 0; i < fds.size(); ++i)
        if (fds[i].revents) return owners[i];
    }
    return nullptr;
  }

  void store(Range range, const Rcpp::List& reply, std::deque<Range>& requeue) {
    SEXP values = reply[kReplyValues];
    SEXP error = reply[kReplyError];
    SEXP warnings = reply[kReplyWarnings];
    R_xlen_t start = static_cast<R_xlen_t>(range.start);
    R_xlen_t count = static_cast<R_xlen_t>(range.length);
    R_xlen_t finished = count;
    if (error != R_NilValue) {
      Rcpp::List err(error);
      R_xlen_t position = static_cast<R_xlen_t>(Rcpp::as<double>(err["position"]));
      finished = position - 1;
      failed_.push_back(static_cast<int>(start + position));
      errors_.push_back(err);
      if (position < count) requeue.push_back({range.start + position, range.length - position});
      done_[start + position - 1] = TRUE;
    }
    for (R_xlen_t i = 0; i < finished; ++i) {
      SET_VECTOR_ELT(values_, start + i, VECTOR_ELT(values, i));
      done_[start + i] = TRUE;
    }
    if (warnings != R_NilValue) {
      Rcpp::List list(warnings);
      for (R_xlen_t i = 0; i < list.size(); ++i) {
        Rcpp::List warning(list[i]);
        warning["position"] = Rcpp::as<double>(warning["position"]) + range.start;
        warnings_.push_back(warning);
      }
    }
    double ran = static_cast<double>(finished + (error != R_NilValue));
    finished_ += ran;
    if (ran > 0) estimate_ = Rcpp::as<double>(reply[kReplyElapsed]) / ran;
  }

  // Records the loss of a worker (the first one of the call is reported)
  // and makes sure it is gone; the pool replaces it at the next call.
  bool worker_lost(Worker& w, bool timed_out) {
    std::vector<double> tasks;
    for (const Range& r : w.in_flight)
      for (double i = 0; i < r.length; ++i) tasks.push_back(r.start + i + 1);
    w.in_flight.clear();
    w.stale_replies = 0;
    if (lost()) {
      pool_.kill_worker(w);
      return false;
    }
    if (timed_out) pool_.kill_worker(w);
    std::string how = timed_out ? "was stopped: its task ran longer than the time limit"
                                : pool_.retire(w);
    lost_ = Rcpp::List::create(
        Rcpp::Named("worker") = w.slot + 1, Rcpp::Named("pid") = w.pid,
        Rcpp::Named("how") = how, Rcpp::Named("timed_out") = timed_out,
        Rcpp::Named("output") = pool_.log_tail(w),
        Rcpp::Named("tasks") = Rcpp::NumericVector(tasks.begin(), tasks.end()));
    return false;
  }

  Pool& pool_;
  double call_id_;
  Rcpp::List values_;
  Rcpp::LogicalVector done_;
  double timeout_;
  std::vector<int> failed_;
  std::vector<Rcpp::RObject> errors_, warnings_;
  Rcpp::RObject lost_;
  double estimate_ = -1;
  double finished_ = 0;  // elements done: finished or failed
  InterruptCheck check_interrupt_;
  Progress progress_;
};

// Until the first chunk comes back, the tasks' duration is unknown: the
// first chunks are small (an eighth of a worker's share), so that slow
// tasks are not committed in bulk, yet not single, so that many tiny tasks
// do not cost a round trip each. Once it is known, a chunk holds at most
// kTargetChunkSeconds of work, and at least kMinChunkSeconds (up to a
// worker's share of what remains): a message costs more than many tiny
// tasks, so they travel in as few messages as parLapply() sends.
R_xlen_t next_chunk(R_xlen_t remaining, R_xlen_t n, int workers, double estimate,
                    R_xlen_t fixed) {
  if (fixed > 0) return std::min(fixed, remaining);
  R_xlen_t guided = (remaining + 2 * workers - 1) / (2 * workers);
  if (estimate < 0) return std::max<R_xlen_t>(1, std::min({guided, n / (8 * workers), remaining}));
  double per_element = std::max(estimate, 1e-9);
  R_xlen_t most = static_cast<R_xlen_t>(std::max(1.0, std::floor(kTargetChunkSeconds / per_element)));
  R_xlen_t least = std::min(static_cast<R_xlen_t>(kMinChunkSeconds / per_element),
                            (remaining + workers - 1) / workers);
  return std::max<R_xlen_t>(1, std::min(std::max(std::min(guided, most), least), remaining));
}

Range take(std::deque<Range>& pending, R_xlen_t size) {
  Range& front = pending.front();
  Range out{front.start, std::min(front.length, static_cast<double>(size))};
  front.start += out.length;
  front.length -= out.length;
  if (front.length <= 0) pending.pop_front();
  return out;
}

double total(const std::deque<Range>& pending) {
  double sum = 0;
  for (const Range& r : pending) sum += r.length;
  return sum;
}

}  // namespace

SEXP run_elements(Pool& pool, SEXP job, SEXP inputs, bool is_map, R_xlen_t n,
                  R_xlen_t chunk_size, double timeout, SEXP progress) {
  Gather gather(pool, n, timeout, progress);
  std::deque<Range> pending;
  if (n > 0) pending.push_back({0, static_cast<double>(n)});
  int workers = pool.size();
  while (!gather.lost()) {
    bool sent = true;
    while (sent && !pending.empty() && !gather.lost()) {
      sent = false;
      for (int i = 0; i < workers && !pending.empty() && !gather.lost(); ++i) {
        Worker& w = pool.worker(i);
        // With a time limit nothing waits behind a task that may be stopped;
        // until the tasks' duration is known, one chunk per worker (to size
        // the next ones) rather than two.
        int depth = timeout > 0 || gather.estimate() < 0 ? 1 : kDepth;
        if (!w.usable() || w.awaiting() >= depth) continue;
        R_xlen_t size = next_chunk(static_cast<R_xlen_t>(total(pending)), n, workers,
                                   gather.estimate(), chunk_size);
        Range range = take(pending, size);
        R_xlen_t from = static_cast<R_xlen_t>(range.start);
        R_xlen_t len = static_cast<R_xlen_t>(range.length);
        Rcpp::List chunk_inputs;
        if (is_map) {
          Rcpp::List all(inputs);
          chunk_inputs = Rcpp::List(all.size());
          for (R_xlen_t j = 0; j < all.size(); ++j) chunk_inputs[j] = slice(all[j], from, len);
        }
        Rcpp::RObject chunk = is_map ? static_cast<SEXP>(chunk_inputs) : slice(inputs, from, len);
        Rcpp::List message = Rcpp::List::create(
            kOpChunk, gather.call_id(), range.start, chunk,
            w.job_call == gather.call_id() ? R_NilValue : job);
        w.job_call = gather.call_id();
        if (gather.send(w, message, range)) sent = true;
      }
    }
    if (gather.lost() || (pending.empty() && !gather.awaiting_replies())) break;
    gather.receive(pending);
  }
  gather.final_progress();
  return gather.result();
}

SEXP run_on_workers(Pool& pool, SEXP fun, SEXP args, const std::vector<int>& slots,
                    const std::vector<int>& fds) {
  Gather gather(pool, static_cast<R_xlen_t>(slots.size()), 0);
  Rcpp::List message = Rcpp::List::create(kOpCall, gather.call_id(), fun, args);
  std::deque<Range> unused;
  for (size_t i = 0; i < slots.size() && !gather.lost(); ++i) {
    Worker& w = pool.worker(slots[i]);
    if (w.conn) w.conn->attach_fds(fds);
    gather.send(w, message, {static_cast<double>(i), 1});
  }
  while (!gather.lost() && gather.awaiting_replies()) gather.receive(unused);
  return gather.result();
}

void settle(Pool& pool, double grace) {
  InterruptCheck check_interrupt;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Worker*> owners;
    double now = monotonic_seconds();
    for (int i = 0; i < pool.size(); ++i) {
      Worker& w = pool.worker(i);
      if (w.stale_replies == 0) continue;
      if (!w.usable() || now > w.cancelled_at + grace) {
        pool.kill_worker(w);
        w.stale_replies = 0;
        continue;
      }
      fds.push_back({w.conn->fd(), POLLIN, 0});
      owners.push_back(&w);
    }
    if (fds.empty()) return;
    poll(fds.data(), fds.size(), 20);
    check_interrupt();
    for (size_t i = 0; i < fds.size(); ++i) {
      Worker& w = *owners[i];
      if (!fds[i].revents && !w.conn->has_buffered_input()) continue;
      if (!w.conn->begin_message()) {
        if (w.conn->interrupted()) throw Interrupted();
        continue;  // broken: killed on the next round
      }
      read_message(*w.conn);
      --w.stale_replies;
    }
  }
}

}  // namespace bgpool
