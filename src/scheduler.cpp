// Dynamic scheduling with adaptive chunks and a short pipeline per worker.
//
// Every worker keeps up to kDepth messages queued so it never idles waiting
// for the master. Chunk sizes follow guided self-scheduling (a share of
// what remains, so the tail is balanced), capped so that a chunk takes
// about kTargetChunkSeconds by the workers' own timing: tiny tasks travel
// in large batches, long tasks one at a time.
//
// A call that ends early (a worker lost with no retries, an interrupt, an
// R error) tells the workers still busy with it to drop that work; their
// replies, still owed, are dropped unread before the next call's.
#include "scheduler.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>

#include "clock.h"
#include "interrupts.h"
#include "protocol.h"
#include "replies.h"
#include "serialize.h"

namespace bgpool {

namespace {

constexpr int kDepth = 2;
constexpr double kTargetChunkSeconds = 0.002;
constexpr double kMinChunkSeconds = 0.0005;
constexpr double kProgressSeconds = 0.1;
// How often a long wait wakes to look after the workers' logs.
constexpr double kHousekeepingSeconds = 1;

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

SEXP as_list(const std::vector<Rcpp::RObject>& items);

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

// The state of one call: what each element came to, and the losses.
class Gather {
 public:
  Gather(Pool& pool, R_xlen_t n, double timeout, int retry, SEXP attempts,
         SEXP progress = R_NilValue)
      : pool_(pool),
        values_(n),
        finished_(n),
        attempts_(attempts),
        timeout_(timeout),
        retry_(retry),
        progress_(progress) {
    std::fill(finished_.begin(), finished_.end(), FALSE);
    call_id_ = pool.next_call_id();
  }

  // However the call ends, workers still busy with it are told to drop it;
  // their replies are owed still, and dropped before the next call's.
  ~Gather() {
    for (int i = 0; i < pool_.size(); ++i) {
      Worker& w = pool_.worker(i);
      if (w.in_flight.empty()) continue;
      pool_.cancel(w, call_id_);
      w.in_flight.clear();
    }
  }

  double call_id() const { return call_id_; }
  // Shared copies that all of the call's messages may carry (its job, its
  // arguments); released when the call ends.
  SharedCopies& copies() { return copies_; }
  // Whether the call stops now (a worker lost, no retries).
  bool stopped() const { return stopped_; }
  // Seconds per element, from the latest chunk: the first chunks of a call
  // also pay for compiling the function, which must not keep chunks small.
  double estimate() const { return estimate_; }
  std::deque<Range>& pending() { return pending_; }

  bool send(Worker& w, SEXP message, Range range) {
    if (!w.usable() || !write_message(*w.conn, message)) return worker_lost(w, false);
    if (w.in_flight.empty()) w.busy_since = monotonic_seconds();
    w.in_flight.push_back(range);
    // (a write that an interrupt cut short went on into memory: the
    // message is whole, and the interrupt is acted on now)
    interrupts::raise_pending();
    return true;
  }

  bool awaiting_replies() const {
    for (int i = 0; i < pool_.size(); ++i)
      if (!pool_.worker(i).in_flight.empty()) return true;
    return false;
  }

  // Waits for a reply from one of the workers running the call and
  // handles it; elements after one that failed go back to be run. Returns
  // after one reply, a worker lost, or a housekeeping wake-up.
  void receive() {
    std::vector<Worker*> waiting;
    double deadline = monotonic_seconds() + kHousekeepingSeconds;
    for (int i = 0; i < pool_.size(); ++i) {
      Worker& w = pool_.worker(i);
      if (w.in_flight.empty()) continue;
      if (arrived(w)) return;
      waiting.push_back(&w);
      if (timed(w)) deadline = std::min(deadline, w.busy_since + timeout_);
    }
    wait_workers(waiting, deadline);
    for (Worker* w : waiting)
      if (arrived(*w)) return;
    // Every worker's input is taken in now: only a task whose reply has
    // not begun to come is past its limit (the master may have been busy
    // with another reply meanwhile).
    double now = monotonic_seconds();
    for (Worker* w : waiting) {
      if (timed(*w) && now >= w->busy_since + timeout_ && !w->conn->receiving()) {
        worker_lost(*w, true);
        return;
      }
    }
    pool_.trim_logs();
  }

  void final_progress() { progress_.report(done_, true); }

  // (with R's API: this runs for every call, however small)
  SEXP result() {
    static SEXP names = [] {
      const char* fields[] = {"values", "finished", "failed", "errors", "warnings", "losses",
                              "attempts"};
      SEXP out = Rf_allocVector(STRSXP, 7);
      R_PreserveObject(out);
      for (int i = 0; i < 7; ++i) SET_STRING_ELT(out, i, Rf_mkChar(fields[i]));
      return out;
    }();
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 7));
    Rf_setAttrib(out, R_NamesSymbol, names);
    SET_VECTOR_ELT(out, 0, values_);
    SET_VECTOR_ELT(out, 1, finished_);
    SEXP failed = Rf_allocVector(INTSXP, static_cast<R_xlen_t>(failed_.size()));
    SET_VECTOR_ELT(out, 2, failed);
    std::copy(failed_.begin(), failed_.end(), INTEGER(failed));
    SET_VECTOR_ELT(out, 3, as_list(errors_));
    SET_VECTOR_ELT(out, 4, as_list(warnings_));
    SET_VECTOR_ELT(out, 5, as_list(losses_));
    SET_VECTOR_ELT(out, 6, attempts_);
    UNPROTECT(1);
    return out;
  }

 private:
  // Takes in what `w` sent; handles a whole reply, or the loss of its link.
  bool arrived(Worker& w) {
    switch (take_input(w)) {
      case Arrival::Reply:
        handle_reply(w);
        return true;
      case Arrival::Failed:
        worker_lost(w, false);
        return true;
      case Arrival::Nothing:
        return false;
    }
    return false;
  }

  bool timed(const Worker& w) const {
    return timeout_ > 0 && w.stale() == 0 && !w.in_flight.empty();
  }

  void handle_reply(Worker& w) {
    Rcpp::List reply = take_reply(w);
    if (Rcpp::as<double>(reply[protocol::kReplyCall]) != call_id_) {
      w.conn->mark_broken("a reply out of order");
      worker_lost(w, false);
      return;
    }
    Range range = w.in_flight.front();
    w.in_flight.pop_front();
    w.busy_since = monotonic_seconds();
    store(range, reply);
    progress_.report(done_);
  }

  void store(Range range, const Rcpp::List& reply) {
    SEXP values = reply[protocol::kReplyValues];
    SEXP error = reply[protocol::kReplyError];
    SEXP warnings = reply[protocol::kReplyWarnings];
    R_xlen_t start = static_cast<R_xlen_t>(range.start);
    R_xlen_t count = static_cast<R_xlen_t>(range.length);
    R_xlen_t finished = count;
    if (error != R_NilValue) {
      Rcpp::List signal(error);
      R_xlen_t position = static_cast<R_xlen_t>(Rcpp::as<double>(signal[protocol::kSignalPosition]));
      finished = position - 1;
      failed_.push_back(static_cast<int>(start + position));
      errors_.push_back(signal[protocol::kSignalCondition]);
      if (position < count) pending_.push_front({range.start + position, range.length - position});
    }
    for (R_xlen_t i = 0; i < finished; ++i) {
      SET_VECTOR_ELT(values_, start + i, VECTOR_ELT(values, i));
      finished_[start + i] = TRUE;
    }
    if (warnings != R_NilValue) {
      Rcpp::List list(warnings);
      for (R_xlen_t i = 0; i < list.size(); ++i) {
        Rcpp::List signal(list[i]);
        double position = Rcpp::as<double>(signal[protocol::kSignalPosition]) + range.start;
        warnings_.push_back(Rcpp::List::create(position, signal[protocol::kSignalCondition]));
      }
    }
    double ran = static_cast<double>(finished + (error != R_NilValue));
    done_ += ran;
    if (ran > 0) estimate_ = Rcpp::as<double>(reply[protocol::kReplyElapsed]) / ran;
  }

  // Records how a worker was lost and makes sure it is gone (the pool
  // replaces it at the next call). Its elements each lose an attempt; those
  // with attempts left go back to be run, unless the call stops here.
  bool worker_lost(Worker& w, bool timed_out) {
    std::vector<double> tasks;
    for (const Range& r : w.in_flight)
      for (double i = 0; i < r.length; ++i) tasks.push_back(r.start + i + 1);
    if (timed_out) pool_.kill_worker(w);
    std::string how = timed_out ? "was stopped: its task ran longer than the time limit"
                                : pool_.retire(w);
    losses_.push_back(Rcpp::List::create(
        Rcpp::Named("worker") = w.slot + 1, Rcpp::Named("pid") = w.pid,
        Rcpp::Named("host") = pool_.host_name(w),
        Rcpp::Named("how") = how, Rcpp::Named("timed_out") = timed_out,
        Rcpp::Named("output") = pool_.log_tail(w),
        Rcpp::Named("tasks") = Rcpp::NumericVector(tasks.begin(), tasks.end())));
    if (retry_ == 0) {
      stopped_ = true;
    } else {
      if (attempts_ == R_NilValue) {
        attempts_ = Rcpp::IntegerVector(values_.size(), 0);
      }
      Rcpp::IntegerVector attempts(attempts_);
      for (const Range& r : w.in_flight) {
        for (double i = 0; i < r.length; ++i) {
          R_xlen_t e = static_cast<R_xlen_t>(r.start + i);
          if (++attempts[e] <= retry_) pending_.push_back({r.start + i, 1});
        }
      }
    }
    w.in_flight.clear();
    return false;
  }

  Pool& pool_;
  double call_id_;
  Rcpp::List values_;
  Rcpp::LogicalVector finished_;
  Rcpp::RObject attempts_;
  double timeout_;
  int retry_;
  bool stopped_ = false;
  std::deque<Range> pending_;
  std::vector<int> failed_;
  std::vector<Rcpp::RObject> errors_, warnings_, losses_;
  double estimate_ = -1;
  double done_ = 0;  // elements done: finished or failed
  Progress progress_;
  SharedCopies copies_;
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

SEXP as_list(const std::vector<Rcpp::RObject>& items) {
  SEXP out = PROTECT(Rf_allocVector(VECSXP, static_cast<R_xlen_t>(items.size())));
  for (size_t i = 0; i < items.size(); ++i) SET_VECTOR_ELT(out, static_cast<R_xlen_t>(i), items[i]);
  UNPROTECT(1);
  return out;
}

int usable_workers(Pool& pool) {
  int count = 0;
  for (int i = 0; i < pool.size(); ++i) count += pool.worker(i).usable();
  return count;
}

}  // namespace

Rcpp::List call_request(double call_id, SEXP fun, SEXP args, double share_threshold) {
  SEXP message = PROTECT(Rf_allocVector(VECSXP, protocol::kRequestFields));
  SET_VECTOR_ELT(message, protocol::kRequestKind, Rf_ScalarInteger(protocol::kCall));
  SET_VECTOR_ELT(message, protocol::kRequestCall, Rf_ScalarReal(call_id));
  SET_VECTOR_ELT(message, protocol::kRequestStart, Rf_ScalarReal(0));
  SET_VECTOR_ELT(message, protocol::kRequestData, args);
  SET_VECTOR_ELT(message, protocol::kRequestJob, fun);
  SET_VECTOR_ELT(message, protocol::kRequestShare, Rf_ScalarReal(share_threshold));
  UNPROTECT(1);
  return Rcpp::List(message);
}

SEXP run_elements(Pool& pool, SEXP job, SEXP inputs, bool is_map, R_xlen_t n,
                  R_xlen_t chunk_size, double timeout, int retry, SEXP attempts,
                  SEXP progress) {
  Gather gather(pool, n, timeout, retry, attempts, progress);
  double threshold = pool.share_threshold();
  Rcpp::RObject shared_job = gather.copies().share(job, threshold);
  std::deque<Range>& pending = gather.pending();
  if (n > 0) pending.push_back({0, static_cast<double>(n)});
  int workers = pool.size();
  R_xlen_t even_share = 0;
  while (!gather.stopped()) {
    bool sent = true;
    while (sent && !pending.empty() && !gather.stopped()) {
      sent = false;
      for (int i = 0; i < workers && !pending.empty() && !gather.stopped(); ++i) {
        Worker& w = pool.worker(i);
        // With a time limit nothing waits behind a task that may be stopped;
        // until the tasks' duration is known, one chunk per worker (to size
        // the next ones) rather than two.
        int depth = timeout > 0 || gather.estimate() < 0 || even_share > 0 ? 1 : kDepth;
        if (!w.usable() || static_cast<int>(w.in_flight.size()) >= depth) continue;
        R_xlen_t remaining = static_cast<R_xlen_t>(total(pending));
        // When a worker's share of what remains is little work, each takes
        // that share in one message, as parLapply() sends: more messages
        // would cost more than the balance they buy.
        if (even_share == 0 && chunk_size <= 0 && gather.estimate() >= 0 &&
            static_cast<double>(remaining) * gather.estimate() <= workers * kTargetChunkSeconds)
          even_share = (remaining + workers - 1) / workers;
        R_xlen_t size = next_chunk(remaining, n, workers, gather.estimate(),
                                   chunk_size > 0 ? chunk_size : even_share);
        Range range = take(pending, size);
        R_xlen_t from = static_cast<R_xlen_t>(range.start);
        R_xlen_t len = static_cast<R_xlen_t>(range.length);
        SharedCopies chunk_copies;  // released once the chunk is sent
        Rcpp::RObject chunk;
        if (is_map) {
          Rcpp::List all(inputs);
          Rcpp::List columns(all.size());
          for (R_xlen_t j = 0; j < all.size(); ++j) columns[j] = slice(all[j], from, len);
          chunk = columns;
        } else {
          chunk = slice(inputs, from, len);
        }
        Rcpp::List message(protocol::kRequestFields);
        message[protocol::kRequestKind] = static_cast<int>(protocol::kChunk);
        message[protocol::kRequestCall] = gather.call_id();
        message[protocol::kRequestStart] = range.start;
        message[protocol::kRequestData] = chunk_copies.share(chunk, threshold);
        message[protocol::kRequestJob] = w.job_call == gather.call_id() ? R_NilValue : static_cast<SEXP>(shared_job);
        message[protocol::kRequestShare] = threshold;
        w.job_call = gather.call_id();
        if (gather.send(w, message, range)) sent = true;
      }
    }
    if (gather.stopped() || !gather.awaiting_replies()) {
      // Elements are left only when no worker can take them: R replaces
      // the lost workers and runs them again.
      if (pending.empty() || usable_workers(pool) == 0 || gather.stopped()) break;
    }
    gather.receive();
  }
  gather.final_progress();
  return gather.result();
}

SEXP run_on_workers(Pool& pool, SEXP fun, SEXP args, const std::vector<int>& slots) {
  Gather gather(pool, static_cast<R_xlen_t>(slots.size()), 0, 0, R_NilValue);
  Rcpp::List message = call_request(gather.call_id(), fun,
                                    gather.copies().share(args, pool.share_threshold()),
                                    pool.share_threshold());
  for (size_t i = 0; i < slots.size() && !gather.stopped(); ++i)
    gather.send(pool.worker(slots[i]), message, {static_cast<double>(i), 1});
  while (!gather.stopped() && gather.awaiting_replies()) gather.receive();
  return gather.result();
}

// A worker that still owes replies to abandoned calls has `grace` seconds
// after it was told to drop them, or after it last showed progress (a
// reply dropped, or bytes of a request taken), before it is stopped.
void settle(Pool& pool, double grace) {
  for (;;) {
    std::vector<Worker*> owing;
    double now = monotonic_seconds();
    for (int i = 0; i < pool.size(); ++i) {
      Worker& w = pool.worker(i);
      while (w.stale() > 0 && w.usable()) {
        Connection::Status status = w.conn->discard(false);
        if (status != Connection::Status::Complete) break;
        w.cancelled_at = now;
      }
      if (w.stale() == 0) continue;
      if (!w.usable() || now > w.cancelled_at + grace) {
        pool.kill_worker(w);
        continue;
      }
      owing.push_back(&w);
    }
    if (owing.empty()) return;
    std::vector<size_t> unsent;
    for (Worker* w : owing) unsent.push_back(w->conn->pending_output());
    wait_workers(owing, monotonic_seconds() + 0.02);
    for (size_t i = 0; i < owing.size(); ++i)
      if (owing[i]->conn->pending_output() < unsent[i]) owing[i]->cancelled_at = monotonic_seconds();
  }
}

}  // namespace bgpool
