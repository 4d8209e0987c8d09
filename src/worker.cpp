// The template and the worker's side of the link. The template, started
// by the master, forks a worker per request; a worker connects, proves
// itself, then exchanges messages with the master. Called from R/worker.R.
#include <Rcpp.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <tuple>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "clock.h"
#include "entry.h"
#include "platform.h"
#include "pool.h"
#include "protocol.h"
#include "r_internals.h"
#include "rng.h"
#include "serialize.h"
#include "tasks.h"

namespace {

// Where the master listens and the pool's token: read once by the
// template, inherited by the workers it forks.
std::string socket_path, token;
std::unique_ptr<bgpool::Connection> master;
double received_at = 0;  // when the request being handled arrived

// The cancel board (pool.h): the template maps it, the workers inherit
// the mapping; a worker reads its own cell.
uint64_t* board = nullptr;
uint32_t my_slot = 0;

// The call whose request runs now (its number), or 0 between requests.
// The master cancels a call, and every earlier one, by putting its number
// on the board and sending SIGUSR1 (numbers grow with each call, so the
// board says all that signals close together could). A signal about
// calls that ended already (one that arrives late) stops nothing.
// Requests of cancelled calls still queued are not run.
std::atomic<uint64_t> running_call{0}, cancelled_up_to{0};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "a signal handler sets it");

bool cancelled(uint64_t call) { return call != 0 && call <= cancelled_up_to; }

void on_cancel(int) {
  uint64_t call = board ? __atomic_load_n(&board[my_slot], __ATOMIC_SEQ_CST) : 0;
  if (call > cancelled_up_to) cancelled_up_to = call;
  if (cancelled(running_call)) R_interrupts_pending = 1;
}

void install_cancel_handler() {
  struct sigaction action {};
  action.sa_handler = on_cancel;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGUSR1, &action, nullptr);
}

// The template reaps its workers: SIGCHLD writes a byte to this pipe,
// which its loop polls.
int sigchld_pipe[2] = {-1, -1};

void on_sigchld(int) {
  int saved = errno;
  char byte = 0;
  ssize_t ignored = write(sigchld_pipe[1], &byte, 1);
  (void)ignored;  // a full pipe has said it already
  errno = saved;
}

void catch_sigchld(bool on) {
  struct sigaction action {};
  action.sa_handler = on ? on_sigchld : SIG_DFL;
  action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&action.sa_mask);
  sigaction(SIGCHLD, &action, nullptr);
}

// Tells the master how the workers that ended did.
void report_ended() {
  char drain[64];
  while (read(sigchld_pipe[0], drain, sizeof drain) > 0) {
  }
  for (;;) {
    auto ended = bgpool::os::reap_any();
    if (ended.first <= 0) return;
    bgpool::TemplateReport report{};
    report.kind = bgpool::kReportEnded;
    report.pid = ended.first;
    report.status = ended.second.status;
    report.signal = ended.second.signal;
    if (master) master->write_raw(&report, sizeof report);
  }
}

std::string take_env(const char* name) {
  const char* value = std::getenv(name);
  if (!value)
    throw std::runtime_error(std::string("bgpool: ") + name +
                             " is not set: this R process is not a pool worker");
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
    throw std::runtime_error("bgpool: cannot greet the master: " + master->failure());
}

// Forks the worker the master asked for. Returns in the new worker only
// (with its slot); the template answers with its pid or why it failed.
bool fork_worker(const bgpool::ForkRequest& request, const std::string& output_path) {
  bgpool::TemplateReport report{};
  report.kind = bgpool::kReportForked;
  report.request = request.request;
  report.slot = request.slot;
  report.pid = -1;
  report.failed_step = bgpool::kForkOk;
  int output = -1;
  if (!output_path.empty()) {
    output = bgpool::os::open_output(output_path);
    if (output < 0) {
      report.error = errno;
      report.failed_step = bgpool::kForkOpenOutput;
    }
  }
  if (report.failed_step == bgpool::kForkOk) {
    R_FlushConsole();  // or the fork repeats what was buffered
    pid_t pid = fork();
    if (pid == 0) {
      master.reset();  // the template's link, not ours
      catch_sigchld(false);
      close(sigchld_pipe[0]);
      close(sigchld_pipe[1]);
      my_slot = request.slot;
      bgpool::os::exit_with_lifeline(bgpool::kLifelineFd);
      bgpool::os::redirect_output(output, bgpool::kMasterStdoutFd, bgpool::kMasterStderrFd);
      return true;
    }
    report.pid = pid;
    if (pid < 0) {
      report.error = errno;
      report.failed_step = bgpool::kForkFork;
    }
  }
  if (output >= 0) close(output);
  master->write_raw(&report, sizeof report);
  return false;
}

}  // namespace

// The template's loop: returns -1 when the master has gone, and in each
// forked worker its slot (1-based), for R to go on with worker_main().
int template_serve() {
  socket_path = take_env("BGPOOL_SOCKET");
  token = take_env("BGPOOL_TOKEN");
  size_t slots = std::stoul(take_env("BGPOOL_SLOTS"));
  // (what the master passed stays out of programs the workers run)
  for (int fd : {bgpool::kLifelineFd, bgpool::kMasterStdoutFd, bgpool::kMasterStderrFd})
    bgpool::os::set_flags(fd, false);
  bgpool::os::exit_with_lifeline(bgpool::kLifelineFd);
  board = static_cast<uint64_t*>(bgpool::os::map_shared(bgpool::kBoardFd, sizeof(uint64_t) * slots));
  close(bgpool::kBoardFd);
  if (!board) throw std::runtime_error("bgpool: cannot map the pool's cancel board");
  std::tie(sigchld_pipe[0], sigchld_pipe[1]) = bgpool::os::make_pipe();
  bgpool::os::set_flags(sigchld_pipe[0], true);
  bgpool::os::set_flags(sigchld_pipe[1], true);
  catch_sigchld(true);
  greet_master(bgpool::kTemplateSlot);
  for (;;) {
    pollfd fds[2] = {{master->fd(), POLLIN, 0}, {sigchld_pipe[0], POLLIN, 0}};
    if (!master->has_input() && poll(fds, 2, -1) < 0 && errno != EINTR) return -1;
    if (fds[1].revents) report_ended();
    if (!master->has_input() && !fds[0].revents) continue;
    bgpool::ForkRequest request{};
    if (!master->read_raw(&request, sizeof request, -1)) return -1;
    std::string output_path(request.path_length, '\0');
    if (!master->read_raw(&output_path[0], output_path.size(), 10)) return -1;
    if (fork_worker(request, output_path)) return static_cast<int>(request.slot) + 1;
  }
}

// Connects a new worker to the master. Its temporary directory is its own
// (named after its pid, in the pool's directory), so that the master can
// remove what a worker that was killed leaves there.
void worker_connect(int slot) {
  // For the test of a worker that dies while starting (test-pool-lifecycle.R).
  if (const char* status = std::getenv("BGPOOL_TEST_EXIT_BEFORE_GREETING")) {
    dprintf(2, "bgpool worker %d: exiting before it greets the master, as asked\n", slot);
    bgpool::os::exit_now(std::atoi(status));
  }
  install_cancel_handler();
  const char* pool_dir = std::getenv("TMPDIR");
  if (pool_dir) {
    std::string own = std::string(pool_dir) + "/tmp-" + std::to_string(getpid());
    if (mkdir(own.c_str(), 0700) == 0) setenv("TMPDIR", own.c_str(), 1);
  }
  greet_master(static_cast<uint32_t>(slot - 1));
}

// The next request from the master (see protocol.h), or NULL when the
// master has gone. From here until its reply is sent, the request's call
// can be cancelled.
SEXP worker_receive() {
  if (!master || master->read() != bgpool::Connection::Status::Complete) return R_NilValue;
  SEXP request = PROTECT(bgpool::read_value(*master));
  received_at = bgpool::monotonic_seconds();
  running_call = static_cast<uint64_t>(REAL(VECTOR_ELT(request, bgpool::protocol::kRequestCall))[0]);
  UNPROTECT(1);
  return request;
}

// Whether the master has cancelled the call running now: an interrupt
// condition is then ours, not one the task signalled.
bool worker_cancel_requested() { return cancelled(running_call); }

// Sends the reply to `request` (see protocol.h) and ends the window in
// which a cancel signal interrupts: a cancel that came too late to stop
// this task must not interrupt the next one. FALSE when the master has gone.
bool worker_send(SEXP request, SEXP values, SEXP error, SEXP warnings) {
  using namespace bgpool::protocol;
  running_call = 0;
  R_interrupts_pending = 0;
  bgpool::SharedCopies copies;  // released once the reply is sent
  SEXP reply = PROTECT(Rf_allocVector(VECSXP, kReplyFields));
  SET_VECTOR_ELT(reply, kReplyCall, VECTOR_ELT(request, kRequestCall));
  SET_VECTOR_ELT(reply, kReplyStart, VECTOR_ELT(request, kRequestStart));
  SET_VECTOR_ELT(reply, kReplyValues, copies.share(values, REAL(VECTOR_ELT(request, kRequestShare))[0]));
  SET_VECTOR_ELT(reply, kReplyError, error);
  SET_VECTOR_ELT(reply, kReplyElapsed, Rf_ScalarReal(bgpool::monotonic_seconds() - received_at));
  SET_VECTOR_ELT(reply, kReplyWarnings, warnings);
  bgpool::forget_chunk();
  bool sent = master && bgpool::write_message(*master, reply);
  if (master) master->release_message();
  UNPROTECT(1);
  return sent;
}

namespace {

bool collect_asked = false;

// Calls bgpool's R function `name` with `args` (under unwind protection).
SEXP call_r(const char* name, std::initializer_list<SEXP> args) {
  static SEXP ns = [] {
    SEXP env = R_FindNamespace(Rf_mkString("bgpool"));
    R_PreserveObject(env);
    return env;
  }();
  SEXP call = PROTECT(Rf_lcons(Rf_install(name), R_NilValue));
  SEXP tail = call;
  for (SEXP arg : args) {
    SETCDR(tail, Rf_cons(arg, R_NilValue));
    tail = CDR(tail);
  }
  SEXP value = Rcpp::unwindProtect([&] { return Rf_eval(call, ns); });
  UNPROTECT(1);
  return value;
}

}  // namespace

// Asks for R's collection once the reply is sent (shared vectors let go
// of, whose memory should go at once); it costs more than a small request.
void worker_collect_later() { collect_asked = true; }

// Collects, if asked, once nothing refers to the request any more.
void worker_collect_if_asked(SEXP state) {
  if (!collect_asked) return;
  collect_asked = false;
  Rf_defineVar(Rf_install("request"), R_NilValue, state);
  call_r("gc", {Rf_ScalarLogical(FALSE)});
}

// Serves requests until the master goes away (then returns TRUE). R code
// runs only for what needs it (a call's job, a chunk's elements, the
// tasks): an R loop per request would cost more than a small task. `state`
// (an environment) holds the request being served, its tasks' warnings
// (kept by keep_warning()) and the call's job, for the handlers in
// R/worker.R when a task fails.
bool worker_serve(SEXP state) {
  using namespace bgpool::protocol;
  static SEXP request_sym = Rf_install("request"), warnings_sym = Rf_install("warnings"),
              job_sym = Rf_install("job");
  for (;;) {
    Rf_defineVar(request_sym, R_NilValue, state);
    Rf_defineVar(warnings_sym, R_NilValue, state);
    SEXP request = PROTECT(worker_receive());
    if (request == R_NilValue) {
      UNPROTECT(1);
      return true;
    }
    Rf_defineVar(request_sym, request, state);
    SEXP values = R_NilValue, error = R_NilValue;
    if (cancelled(running_call)) {
      SEXP condition = PROTECT(call_r("cancelled", {}));
      error = call_r("signal", {Rf_ScalarInteger(1), condition});
      UNPROTECT(1);
    } else if (INTEGER(VECTOR_ELT(request, kRequestKind))[0] == kChunk) {
      SEXP job = VECTOR_ELT(request, kRequestJob);
      if (job != R_NilValue)
        Rf_defineVar(job_sym, call_r("prepare_job", {job, VECTOR_ELT(request, kRequestCall)}), state);
      values = call_r("run_chunk", {Rf_findVarInFrame(state, job_sym), request});
    } else {
      SEXP value = PROTECT(worker_call(VECTOR_ELT(request, kRequestJob), VECTOR_ELT(request, kRequestData)));
      values = Rf_allocVector(VECSXP, 1);
      SET_VECTOR_ELT(values, 0, value);
      UNPROTECT(1);
    }
    PROTECT(values);
    PROTECT(error);
    bool sent = worker_send(request, values, error, Rf_findVarInFrame(state, warnings_sym));
    UNPROTECT(3);
    worker_collect_if_asked(state);
    if (!sent) return true;
  }
}

// The routines R/worker.R calls (see entry.h).

extern "C" SEXP C_template_serve() {
  return bgpool::guarded([] { return Rf_ScalarInteger(template_serve()); });
}

extern "C" SEXP C_worker_connect(SEXP slot) {
  return bgpool::guarded([&] {
    worker_connect(Rf_asInteger(slot));
    return R_NilValue;
  });
}

extern "C" SEXP C_worker_cancel_requested() {
  return Rf_ScalarLogical(worker_cancel_requested());
}

extern "C" SEXP C_worker_send(SEXP request, SEXP values, SEXP error, SEXP warnings) {
  return bgpool::guarded(
      [&] { return Rf_ScalarLogical(worker_send(request, values, error, warnings)); });
}

extern "C" SEXP C_worker_collect_later() {
  worker_collect_later();
  return R_NilValue;
}

extern "C" SEXP C_worker_collect_if_asked(SEXP state) {
  return bgpool::guarded([&] {
    worker_collect_if_asked(state);
    return R_NilValue;
  });
}

extern "C" SEXP C_worker_serve(SEXP state) {
  return bgpool::guarded([&] { return Rf_ScalarLogical(worker_serve(state)); });
}
