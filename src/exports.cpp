// The native entry points that R/ calls for the master's side: one thin
// function each over Pool and the scheduler.
#include <Rcpp.h>

#include <memory>

#include "pool.h"
#include "scheduler.h"

using bgpool::Pool;

namespace {

void finalize_pool(SEXP xp) {
  delete static_cast<Pool*>(R_ExternalPtrAddr(xp));
  R_ClearExternalPtr(xp);
}

Pool& get_pool(SEXP xp) {
  auto* pool = static_cast<Pool*>(R_ExternalPtrAddr(xp));
  if (!pool || pool->stopped()) Rcpp::stop("bgpool: this pool has been deleted");
  return *pool;
}

// Runs f, turning a user interrupt during a wait into R's interrupt.
template <typename F>
auto interruptible(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const bgpool::Interrupted&) {
    throw Rcpp::internal::InterruptedException();
  }
}

}  // namespace

// `outfile`: NULL for a log file per worker, "" for the master's own
// output, or a file that all workers append to.
// [[Rcpp::export(rng = false)]]
SEXP pool_create(std::string program, std::vector<std::string> args,
                 std::vector<std::string> env, double start_timeout,
                 std::string temp_dir, int size, SEXP outfile) {
  bgpool::WorkerCommand command{program, args, env, start_timeout};
  if (outfile != R_NilValue) {
    command.output_file = Rcpp::as<std::string>(outfile);
    command.output = command.output_file.empty() ? bgpool::Output::Master
                                                 : bgpool::Output::File;
  }
  auto pool = std::make_unique<Pool>(command, temp_dir);
  interruptible([&] {
    pool->start(size);
    return 0;
  });
  SEXP xp = PROTECT(R_MakeExternalPtr(pool.release(), R_NilValue, R_NilValue));
  // onexit: the workers also go when the R session ends.
  R_RegisterCFinalizerEx(xp, finalize_pool, TRUE);
  UNPROTECT(1);
  return xp;
}

// [[Rcpp::export(rng = false)]]
void pool_stop(SEXP xp) {
  if (auto* pool = static_cast<Pool*>(R_ExternalPtrAddr(xp))) pool->stop();
}

// [[Rcpp::export(rng = false)]]
Rcpp::List pool_state(SEXP xp) {
  Pool& pool = get_pool(xp);
  pool.check_workers();
  Rcpp::IntegerVector pids(pool.size());
  Rcpp::LogicalVector usable(pool.size());
  Rcpp::CharacterVector logs(pool.size());
  for (int i = 0; i < pool.size(); ++i) {
    pids[i] = pool.worker(i).pid;
    usable[i] = pool.worker(i).usable();
    logs[i] = pool.worker(i).log_path;
  }
  return Rcpp::List::create(Rcpp::Named("pids") = pids, Rcpp::Named("usable") = usable,
                            Rcpp::Named("logs") = logs, Rcpp::Named("dir") = pool.dir());
}

// Brings the pool into shape for a new call: drops what workers still owe
// from abandoned calls (killing those stuck longer than `grace` seconds),
// then replaces dead or broken workers; returns their (1-based) slots.
// [[Rcpp::export(rng = false)]]
std::vector<int> pool_prepare(SEXP xp, double grace) {
  Pool& pool = get_pool(xp);
  std::vector<int> slots = interruptible([&] {
    bgpool::settle(pool, grace);
    return pool.replace_unusable();
  });
  for (int& slot : slots) ++slot;
  return slots;
}

// [[Rcpp::export(rng = false)]]
SEXP pool_run_elements(SEXP xp, SEXP job, SEXP inputs, bool is_map, double n,
                       double chunk_size, double timeout, SEXP progress) {
  Pool& pool = get_pool(xp);
  return interruptible([&] {
    return bgpool::run_elements(pool, job, inputs, is_map, static_cast<R_xlen_t>(n),
                                static_cast<R_xlen_t>(chunk_size), timeout, progress);
  });
}

// [[Rcpp::export(rng = false)]]
SEXP pool_run_on_workers(SEXP xp, SEXP fun, SEXP args, std::vector<int> slots,
                         std::vector<int> fds) {
  Pool& pool = get_pool(xp);
  for (int& slot : slots) --slot;
  return interruptible([&] { return bgpool::run_on_workers(pool, fun, args, slots, fds); });
}

// parallel's node interface (R/cluster.R); slots are 1-based here.

// [[Rcpp::export(rng = false)]]
SEXP pool_node_send(SEXP xp, int slot, SEXP fun, SEXP args) {
  Pool& pool = get_pool(xp);
  return interruptible([&] { return bgpool::node_send(pool, slot - 1, fun, args); });
}

// [[Rcpp::export(rng = false)]]
int pool_node_wait(SEXP xp, std::vector<int> slots, double timeout) {
  Pool& pool = get_pool(xp);
  for (int& slot : slots) --slot;
  return 1 + interruptible([&] { return bgpool::node_wait(pool, slots, timeout); });
}

// [[Rcpp::export(rng = false)]]
SEXP pool_node_receive(SEXP xp, int slot) {
  Pool& pool = get_pool(xp);
  return interruptible([&] { return bgpool::node_receive(pool, slot - 1); });
}

// [[Rcpp::export(rng = false)]]
void pool_node_cancel(SEXP xp, std::vector<int> slots) {
  Pool& pool = get_pool(xp);
  for (int& slot : slots) --slot;
  bgpool::node_cancel(pool, slots);
}

// Makes `fd` (a descriptor R's serverSocket() opened: a connection R can
// poll) mirror the worker in `slot`, or, fd = -1, sets whether its mirror
// polls as ready: a reply has been read and awaits R.
// [[Rcpp::export(rng = false)]]
void pool_node_mirror(SEXP xp, int slot, int fd, bool ready) {
  Pool& pool = get_pool(xp);
  if (fd >= 0 && !bgpool::os::is_tcp_listener(fd))
    Rcpp::stop("bgpool: descriptor %d is not the socket R just opened", fd);
  pool.mirror(pool.worker(slot - 1), ready, fd);
}

// [[Rcpp::export(rng = false)]]
std::vector<int> pool_open_fds() { return bgpool::os::open_fds(); }

