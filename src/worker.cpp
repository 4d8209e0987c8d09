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

// Evaluates `call` for k = 1..n in `env` (which holds `inputs`), storing
// each value in `values`, which it defines in `env`. This is lapply()'s own
// loop: the first `nforce` arguments are forced before the call, so a
// function that keeps its argument unevaluated still sees its own element.
// If a task fails, R jumps out to the caller's tryCatch(), and `k` and
// `values` in `env` tell how far the chunk got.
// [[Rcpp::export(rng = false)]]
void worker_run_elements(SEXP call, SEXP env, int n, int nforce) {
  SEXP k = PROTECT(Rf_ScalarInteger(0));
  SEXP values = PROTECT(Rf_allocVector(VECSXP, n));
  Rf_defineVar(Rf_install("k"), k, env);
  Rf_defineVar(Rf_install("values"), values, env);
  UNPROTECT(2);
  Rcpp::unwindProtect([&] {
    for (int i = 0; i < n; ++i) {
      INTEGER(k)[0] = i + 1;
      SEXP value = R_forceAndCall(call, nforce, env);
      if (value != R_NilValue) SET_VECTOR_ELT(values, i, value);
    }
    return R_NilValue;
  });
}
