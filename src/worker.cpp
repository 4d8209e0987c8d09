// The worker's side of the link: connect, prove itself, then exchange
// messages with the master. Called from the worker loop in R/worker.R.
#include <Rcpp.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "clock.h"
#include "platform.h"
#include "pool.h"
#include "serialize.h"

namespace {

std::unique_ptr<bgpool::Connection> master;

std::string take_env(const char* name) {
  const char* value = std::getenv(name);
  if (!value) Rcpp::stop("bgpool: %s is not set: this R process is not a pool worker", name);
  std::string out = value;
  unsetenv(name);  // tasks that start processes must not pass these on
  return out;
}

}  // namespace

// [[Rcpp::export(rng = false)]]
void worker_connect() {
  std::string socket = take_env("BGPOOL_SOCKET");
  std::string token = take_env("BGPOOL_TOKEN");
  uint32_t slot = static_cast<uint32_t>(std::stoul(take_env("BGPOOL_SLOT")));
  pid_t master_pid = static_cast<pid_t>(std::stol(take_env("BGPOOL_MASTER_PID")));
  bgpool::os::die_with_parent(master_pid);

  bgpool::Hello hello{};
  std::memcpy(hello.magic, bgpool::kHelloMagic, sizeof hello.magic);
  hello.slot = slot;
  hello.pid = static_cast<uint32_t>(getpid());
  std::memcpy(hello.token, token.data(), std::min(token.size(), sizeof hello.token));
  master = std::make_unique<bgpool::Connection>(bgpool::os::connect_unix(socket), nullptr);
  if (!master->write_raw(&hello, sizeof hello))
    Rcpp::stop("bgpool: cannot greet the master: %s", master->failure());
}

// The next message from the master, or NULL when the master has gone.
// [[Rcpp::export(rng = false)]]
SEXP worker_receive() {
  if (!master || !master->begin_message()) return R_NilValue;
  return bgpool::read_message(*master);
}

// Returns FALSE when the master has gone.
// [[Rcpp::export(rng = false)]]
bool worker_send(SEXP message) {
  return master && bgpool::write_message(*master, message);
}

// [[Rcpp::export(rng = false)]]
double monotonic_time() { return bgpool::monotonic_seconds(); }
