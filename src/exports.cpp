// The native entry points that R/ calls for the master's side: one thin
// function each over Pool, the scheduler and the cluster nodes.
#include <Rcpp.h>

#include <memory>

#include "hmac.h"
#include "nodes.h"
#include "pool.h"
#include "protocol.h"
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
  if (!pool->owned()) Rcpp::stop("bgpool: this pool belongs to another process");
  return *pool;
}

std::vector<int> zero_based(std::vector<int> slots) {
  for (int& slot : slots) --slot;
  return slots;
}

}  // namespace

// `hosts`: how to start each host's template (R/hosts.R), this machine's
// first; `listen_address` and `token_file`: where hosts that connect over
// TCP find the master and the pool's token ("" when there are none). `outfile`: NULL for a log file per worker, "" for the master's own
// output, or a file that all workers append to.
// [[Rcpp::export(rng = false)]]
SEXP pool_create(Rcpp::List hosts, double start_timeout, std::string temp_dir, int size,
                 SEXP outfile, std::string listen_address, std::string token_file) {
  bgpool::WorkerCommand command;
  command.start_timeout = start_timeout;
  command.listen_address = listen_address;
  for (Rcpp::List host : hosts) {
    bgpool::HostCommand h;
    h.name = Rcpp::as<std::string>(host["name"]);
    h.program = Rcpp::as<std::string>(host["program"]);
    h.args = Rcpp::as<std::vector<std::string>>(host["args"]);
    h.extra_env = Rcpp::as<std::vector<std::string>>(host["env"]);
    h.workers = Rcpp::as<int>(host["workers"]);
    h.destination = Rcpp::as<std::string>(host["destination"]);
    h.remote_socket = Rcpp::as<std::string>(host["remote_socket"]);
    h.remote_command = Rcpp::as<std::string>(host["remote_command"]);
    h.tcp = Rcpp::as<bool>(host["tcp"]);
    h.log_path = Rcpp::as<std::string>(host["log_path"]);
    command.hosts.push_back(h);
  }
  if (outfile != R_NilValue) {
    command.output_file = Rcpp::as<std::string>(outfile);
    command.output = command.output_file.empty() ? bgpool::Output::Master
                                                 : bgpool::Output::File;
  }
  auto pool = std::make_unique<Pool>(command, temp_dir);
  if (!token_file.empty()) pool->write_token(token_file);
  pool->start(size);
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

// Whether this process may use the pool: not a process forked from the
// one that created it (mcparallel()), which shares its sockets.
// [[Rcpp::export(rng = false)]]
bool pool_owned(SEXP xp) {
  auto* pool = static_cast<Pool*>(R_ExternalPtrAddr(xp));
  return pool && !pool->stopped() && pool->owned();
}

// [[Rcpp::export(rng = false)]]
Rcpp::List pool_state(SEXP xp) {
  Pool& pool = get_pool(xp);
  pool.check_workers();
  Rcpp::IntegerVector pids(pool.size());
  Rcpp::LogicalVector usable(pool.size());
  Rcpp::CharacterVector logs(pool.size()), hosts(pool.size());
  for (int i = 0; i < pool.size(); ++i) {
    hosts[i] = pool.host_name(pool.worker(i));
    pids[i] = pool.worker(i).pid;
    usable[i] = pool.worker(i).usable();
    logs[i] = pool.worker(i).log_path;
  }
  return Rcpp::List::create(Rcpp::Named("pids") = pids, Rcpp::Named("usable") = usable,
                            Rcpp::Named("logs") = logs, Rcpp::Named("hosts") = hosts,
                            Rcpp::Named("dir") = pool.dir());
}

// Brings the pool into shape for a new call: drops what workers still owe
// from abandoned calls (killing those stuck longer than `grace` seconds);
// returns the (1-based) slots of workers that are dead or whose link
// broke, for pool_replace(). `log_limit`: the bytes a worker's own log may
// grow to (0: no limit); `share_threshold`: the bytes from which vectors in
// messages go as shared memory.
// Replies owed to calls sent through the pool's cluster are read first
// (unless `drain_cluster` is false: the cluster itself sends another), so
// that the workers are free for this call.
// [[Rcpp::export(rng = false)]]
std::vector<int> pool_prepare(SEXP xp, bool drain_cluster, double grace, double log_limit,
                              double share_threshold) {
  Pool& pool = get_pool(xp);
  pool.set_log_limit(log_limit);
  pool.set_share_threshold(share_threshold);
  pool.drop_released_exports();
  if (drain_cluster && bgpool::node_busy(pool)) bgpool::node_collect(pool);
  bgpool::node_settle(pool);
  bgpool::settle(pool, grace);
  pool.trim_logs();
  pool.check_workers();
  std::vector<int> slots;
  for (int i = 0; i < pool.size(); ++i)
    if (!pool.worker(i).usable()) slots.push_back(i + 1);
  return slots;
}

// Starts new workers in `slots` (1-based), in an empty state.
// [[Rcpp::export(rng = false)]]
void pool_replace(SEXP xp, std::vector<int> slots) {
  Pool& pool = get_pool(xp);
  pool.replace(zero_based(slots));
}

// Stops the workers in `slots` (1-based); they are replaced at the next call.
// [[Rcpp::export(rng = false)]]
void pool_kill_workers(SEXP xp, std::vector<int> slots) {
  Pool& pool = get_pool(xp);
  for (int slot : zero_based(slots)) pool.kill_worker(pool.worker(slot));
}

// [[Rcpp::export(rng = false)]]
SEXP pool_run_elements(SEXP xp, SEXP job, SEXP inputs, bool is_map, double n,
                       double chunk_size, double timeout, int retry, SEXP attempts,
                       SEXP progress) {
  Pool& pool = get_pool(xp);
  return bgpool::run_elements(pool, job, inputs, is_map, static_cast<R_xlen_t>(n),
                              static_cast<R_xlen_t>(chunk_size), timeout, retry, attempts,
                              progress);
}

// [[Rcpp::export(rng = false)]]
SEXP pool_run_on_workers(SEXP xp, SEXP fun, SEXP args, std::vector<int> slots) {
  Pool& pool = get_pool(xp);
  return bgpool::run_on_workers(pool, fun, args, zero_based(slots));
}

// parallel's node interface (R/cluster.R); slots are 1-based here.

// [[Rcpp::export(rng = false)]]
void pool_node_send(SEXP xp, int slot, SEXP fun, SEXP args, SEXP tag) {
  bgpool::node_send(get_pool(xp), slot - 1, fun, args, tag);
}

// [[Rcpp::export(rng = false)]]
SEXP pool_node_receive(SEXP xp, int slot) {
  return bgpool::node_receive(get_pool(xp), slot - 1);
}

// [[Rcpp::export(rng = false)]]
SEXP pool_node_receive_any(SEXP xp, std::vector<int> slots) {
  return bgpool::node_receive_any(get_pool(xp), zero_based(slots));
}

// [[Rcpp::export(rng = false)]]
bool pool_node_busy(SEXP xp) { return bgpool::node_busy(get_pool(xp)); }

// [[Rcpp::export(rng = false)]]
SEXP pool_node_connection(SEXP xp, int slot) {
  return bgpool::node_connection(get_pool(xp), slot - 1);
}

// For the tests of the challenge's hash (test-security.R).
// [[Rcpp::export(rng = false)]]
std::string hmac_sha256_hex(std::string key, Rcpp::RawVector message) {
  bgpool::Digest mac = bgpool::hmac_sha256(key, message.begin(), message.size());
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t byte : mac) {
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

// A random name, for a remote host's forwarded socket (R/hosts.R); R's
// own random numbers are the user's.
// [[Rcpp::export(rng = false)]]
std::string pool_random_name() { return bgpool::os::random_hex(16); }

// Whether a pool directory was left by a session that has died (R/pool.R).
// [[Rcpp::export(rng = false)]]
bool pool_dir_abandoned(std::string dir) { return bgpool::os::pool_dir_abandoned(dir); }
