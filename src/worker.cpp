// The template and the worker's side of the link. The template, started
// by the master, forks a worker per request; a worker connects, proves
// itself, then exchanges messages with the master. Called from R/worker.R.
#include <Rcpp.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "clock.h"
#include "platform.h"
#include "pool.h"
#include "rng.h"
#include "serialize.h"

// R's flag for a pending user interrupt, acted on at R's next check.
extern "C" int R_interrupts_pending;

namespace {

// Where the master listens, the pool's token and the master's pid: read
// once by the template, inherited by the workers it forks.
std::string socket_path, token;
pid_t master_pid = -1;
std::unique_ptr<bgpool::Connection> master;
double received_at = 0;  // when the message being handled arrived

// The call whose task runs now (its call_tag), or 0 between tasks. The
// master cancels a call with SIGUSR1 carrying that call's tag; a signal
// for any other call (one that arrives late) is ignored.
// The last call cancelled: its messages still queued are not run.
volatile sig_atomic_t running_call = 0;
volatile sig_atomic_t cancelled_call = 0;

void on_cancel(int, siginfo_t* info, void*) {
  cancelled_call = info->si_value.sival_int;
  if (running_call != 0 && cancelled_call == running_call) R_interrupts_pending = 1;
}

void install_cancel_handler() {
  struct sigaction action {};
  action.sa_sigaction = on_cancel;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGUSR1, &action, nullptr);
}

std::string take_env(const char* name) {
  const char* value = std::getenv(name);
  if (!value) Rcpp::stop("bgpool: %s is not set: this R process is not a pool worker", name);
  std::string out = value;
  unsetenv(name);  // tasks that start processes must not pass these on
  return out;
}

void greet_master(uint32_t slot) {
  bgpool::Hello hello{};
  std::memcpy(hello.magic, bgpool::kHelloMagic, sizeof hello.magic);
  hello.slot = slot;
  std::memcpy(hello.token, token.data(), std::min(token.size(), sizeof hello.token));
  master = std::make_unique<bgpool::Connection>(bgpool::os::connect_unix(socket_path), nullptr);
  if (!master->write_raw(&hello, sizeof hello))
    Rcpp::stop("bgpool: cannot greet the master: %s", master->failure());
}

}  // namespace

// The template's loop: returns -1 when the master has gone, and in each
// forked worker its slot (1-based), for R to go on with worker_main().
// [[Rcpp::export(rng = false)]]
int template_serve() {
  socket_path = take_env("BGPOOL_SOCKET");
  token = take_env("BGPOOL_TOKEN");
  master_pid = static_cast<pid_t>(std::stol(take_env("BGPOOL_MASTER_PID")));
  bgpool::os::die_with_parent(master_pid);
  greet_master(bgpool::kTemplateSlot);
  for (;;) {
    bgpool::ForkRequest request{};
    if (!master->read_raw(&request, sizeof request, -1)) return -1;
    std::string log_path(request.log_length, '\0');
    if (!master->read_raw(&log_path[0], log_path.size(), 10)) return -1;
    R_FlushConsole();  // or the fork repeats what was buffered
    if (bgpool::os::fork_orphan()) {
      master.reset();  // the template's link, not ours
      if (!bgpool::os::wait_for_adoption(master_pid, 10)) bgpool::os::exit_now(1);
      bgpool::os::redirect_output(log_path);
      return static_cast<int>(request.slot) + 1;
    }
  }
}

// [[Rcpp::export(rng = false)]]
void worker_connect(int slot) {
  install_cancel_handler();
  greet_master(static_cast<uint32_t>(slot - 1));
}

// The next message from the master, or NULL when the master has gone.
// From here until its reply is sent, the message's call can be cancelled.
// [[Rcpp::export(rng = false)]]
SEXP worker_receive() {
  if (!master || !master->begin_message()) return R_NilValue;
  SEXP message = PROTECT(bgpool::read_message(*master));
  received_at = bgpool::monotonic_seconds();
  running_call = bgpool::call_tag(REAL(VECTOR_ELT(message, 1))[0]);
  UNPROTECT(1);
  return message;
}

// The next file descriptor that came with the master's messages, or -1.
// [[Rcpp::export(rng = false)]]
int worker_take_fd() { return master ? master->take_fd() : -1; }

// Whether the call of the message just received has been cancelled.
// [[Rcpp::export(rng = false)]]
bool worker_call_cancelled() { return running_call == cancelled_call; }

// Sends the reply to `message` (see R/worker.R) and ends the window in
// which a cancel signal interrupts: a cancel that came too late to stop
// this task must not interrupt the next one. FALSE when the master has gone.
// [[Rcpp::export(rng = false)]]
bool worker_send(SEXP message, SEXP values, SEXP error, SEXP warnings) {
  running_call = 0;
  R_interrupts_pending = 0;
  Rcpp::List reply = Rcpp::List::create(VECTOR_ELT(message, 1), VECTOR_ELT(message, 2), values,
                                        error, bgpool::monotonic_seconds() - received_at,
                                        warnings);
  return master && bgpool::write_message(*master, reply);
}

// Evaluates `call` for k = 1..n in `env` (which holds `inputs`), storing
// each value in `values`, which it defines in `env`. This is lapply()'s own
// loop: the first `nforce` arguments are forced before the call, so a
// function that keeps its argument unevaluated still sees its own element.
// If a task fails, R jumps out to the caller's tryCatch(), and `k` and
// `values` in `env` tell how far the chunk got.
// With a `seed` (an L'Ecuyer-CMRG .Random.seed), the task of element i of
// the call (1-based: `start` + k, or `index`[`start` + k] in a re-run of
// some elements) runs with stream i of `seed`, the first being `seed`.
// [[Rcpp::export(rng = false)]]
void worker_run_elements(SEXP call, SEXP env, int n, int nforce, SEXP seed, SEXP index,
                         double start) {
  SEXP k = PROTECT(Rf_ScalarInteger(0));
  SEXP values = PROTECT(Rf_allocVector(VECSXP, n));
  Rf_defineVar(Rf_install("k"), k, env);
  Rf_defineVar(Rf_install("values"), values, env);
  UNPROTECT(2);
  std::unique_ptr<bgpool::TaskStreams> streams;
  if (seed != R_NilValue) streams = std::make_unique<bgpool::TaskStreams>(seed);
  R_xlen_t first = static_cast<R_xlen_t>(start);
  Rcpp::unwindProtect([&] {
    for (int i = 0; i < n; ++i) {
      INTEGER(k)[0] = i + 1;
      if (streams) {
        double element = index == R_NilValue ? first + i + 1 : REAL(index)[first + i];
        streams->enter(static_cast<uint64_t>(element) - 1);
      }
      SEXP value = R_forceAndCall(call, nforce, env);
      if (value != R_NilValue) SET_VECTOR_ELT(values, i, value);
    }
    return R_NilValue;
  });
}
