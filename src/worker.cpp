// The template and the worker's side of the link. The template, started
// by the master, forks a worker per request; a worker connects, proves
// itself, then exchanges messages with the master. Called from R/worker.R.
#include <Rcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "clock.h"
#include "platform.h"
#include "pool.h"
#include "protocol.h"
#include "r_internals.h"
#include "rng.h"
#include "serialize.h"

namespace {

// Where the master listens, the pool's token and the master's pid: read
// once by the template, inherited by the workers it forks.
std::string socket_path, token;
pid_t master_pid = -1;
std::unique_ptr<bgpool::Connection> master;
double received_at = 0;  // when the request being handled arrived

// The call whose request runs now (its number), or 0 between requests.
// The master cancels calls with SIGUSR1 carrying a call's tag: that call
// and every earlier one (tags grow with each call, and signals that come
// close together may arrive as one). A signal about calls that ended
// already (one that arrives late) stops nothing.
// Requests of cancelled calls still queued are not run.
std::atomic<uint64_t> running_call{0}, cancelled_up_to{0};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "a signal handler sets it");

bool cancelled(uint64_t call) { return call != 0 && call <= cancelled_up_to; }

void on_cancel(int, siginfo_t* info, void*) {
  uint64_t call = bgpool::tag_of(info->si_value);
  if (call > cancelled_up_to) cancelled_up_to = call;
  if (cancelled(running_call)) R_interrupts_pending = 1;
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

// Forks the worker the master asked for. Returns in the new worker only
// (with its slot); the template answers with its pid or why it failed.
bool fork_worker(const bgpool::ForkRequest& request, const std::string& output_path) {
  bgpool::ForkReport report{request.request, request.slot, -1, 0, bgpool::kForkOk};
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
    try {
      pid_t pid = bgpool::os::fork_orphan();
      if (pid == 0) {
        master.reset();  // the template's link, not ours
        bgpool::os::redirect_output(output);
        return true;
      }
      report.pid = pid;
    } catch (const std::system_error& e) {
      report.error = e.code().value();
      report.failed_step = bgpool::kForkFork;
    }
  }
  if (output >= 0) close(output);
  master->write_raw(&report, sizeof report);
  return false;
}

// The state of the chunk a worker runs: what its tasks gave so far, and
// which one runs (for the handlers in R/worker.R, when a task fails).
struct Chunk {
  SEXP values = R_NilValue;  // preserved while set
  int position = 0;          // 1-based, in the chunk
  void set(SEXP v) {
    if (values != R_NilValue) R_ReleaseObject(values);
    values = v;
    if (v != R_NilValue) R_PreserveObject(v);
    position = 0;
  }
} chunk;

// `base::quote(value)`: an argument evaluated to `value`, as do.call(quote
// = TRUE) passes its arguments.
SEXP quoted(SEXP value) {
  static SEXP quote = [] {
    SEXP f = Rf_lang3(R_DoubleColonSymbol, R_BaseSymbol, Rf_install("quote"));
    R_PreserveObject(f);
    return f;
  }();
  return Rf_lang2(quote, value);
}

// Extra arguments as a call's argument list (pairlist), named as given.
SEXP argument_list(SEXP values, SEXP head = R_NilValue) {
  SEXP names = Rf_getAttrib(values, R_NamesSymbol);
  SEXP out = PROTECT(head);
  for (R_xlen_t i = Rf_xlength(values) - 1; i >= 0; --i) {
    out = Rf_lcons(quoted(VECTOR_ELT(values, i)), out);
    UNPROTECT(1);
    PROTECT(out);
    if (names != R_NilValue && CHAR(STRING_ELT(names, i))[0] != '\0')
      SET_TAG(out, Rf_installChar(STRING_ELT(names, i)));
  }
  UNPROTECT(1);
  return out;
}

// x[[i]] of a plain vector (the scheduler sends columns without
// attributes).
SEXP element(SEXP x, R_xlen_t i) {
  switch (TYPEOF(x)) {
    case LGLSXP: return Rf_ScalarLogical(LOGICAL_ELT(x, i));
    case INTSXP: return Rf_ScalarInteger(INTEGER_ELT(x, i));
    case REALSXP: return Rf_ScalarReal(REAL_ELT(x, i));
    case CPLXSXP: return Rf_ScalarComplex(COMPLEX_ELT(x, i));
    case RAWSXP: return Rf_ScalarRaw(RAW_ELT(x, i));
    case STRSXP: return Rf_ScalarString(STRING_ELT(x, i));
    default: return VECTOR_ELT(x, i);
  }
}

// The element of `list` named `name`, or NULL.
SEXP field(SEXP list, const char* name) {
  SEXP names = Rf_getAttrib(list, R_NamesSymbol);
  for (R_xlen_t i = 0; i < Rf_xlength(names); ++i)
    if (std::strcmp(CHAR(STRING_ELT(names, i)), name) == 0) return VECTOR_ELT(list, i);
  return R_NilValue;
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
    std::string output_path(request.path_length, '\0');
    if (!master->read_raw(&output_path[0], output_path.size(), 10)) return -1;
    if (fork_worker(request, output_path)) {
      if (!bgpool::os::wait_for_adoption(master_pid, 10)) bgpool::os::exit_now(1);
      return static_cast<int>(request.slot) + 1;
    }
  }
}

// Connects a new worker to the master. Its temporary directory is its own
// (named after its pid, in the pool's directory), so that the master can
// remove what a worker that was killed leaves there.
// [[Rcpp::export(rng = false)]]
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
// [[Rcpp::export(rng = false)]]
bool worker_cancel_requested() { return cancelled(running_call); }

// Sends the reply to `request` (see protocol.h) and ends the window in
// which a cancel signal interrupts: a cancel that came too late to stop
// this task must not interrupt the next one. FALSE when the master has gone.
// [[Rcpp::export(rng = false)]]
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
  chunk.set(R_NilValue);
  bool sent = master && bgpool::write_message(*master, reply);
  if (master) master->release_message();
  UNPROTECT(1);
  return sent;
}

// Runs the job of a chunk request on its elements, and returns their
// values. Tasks are called as parLapply() (lapply() on the worker) and
// clusterMap() (do.call() per element) call them: from a frame whose
// enclosure is the base namespace (and so the global environment next),
// holding nothing of bgpool's:
//   lapply: FUN(X[[i]], ...) in a frame with X (the chunk), FUN, i and the
//           extra arguments as `...`; the element is forced first;
//   map:    FUN(quote(x1[[i]]), quote(x2[[i]]), ..., <MoreArgs>), named as
//           the inputs are, as do.call(quote = TRUE) makes it.
// If a task fails, R jumps out to the worker's handlers, which ask
// worker_position() and worker_chunk_values() how far the chunk got.
// With a `seed` (an L'Ecuyer-CMRG .Random.seed), the task of element e of
// the call (`start` + i, or `index`[`start` + i] in a re-run of some
// elements) runs with stream e of `seed`, the first being `seed`.
// [[Rcpp::export(rng = false)]]
SEXP worker_run_elements(SEXP job, SEXP inputs, double start) {
  bool is_map = std::strcmp(CHAR(STRING_ELT(field(job, "kind"), 0)), "map") == 0;
  SEXP fun = field(job, "fun");
  SEXP extra = field(job, "extra");
  SEXP seed = field(job, "seed");
  SEXP index = field(job, "index");
  SEXP names = field(job, "names");
  R_xlen_t n = is_map ? Rf_xlength(VECTOR_ELT(inputs, 0)) : Rf_xlength(inputs);
  chunk.set(Rf_allocVector(VECSXP, n));
  SEXP values = chunk.values;
  std::unique_ptr<bgpool::TaskStreams> streams;
  if (seed != R_NilValue) streams = std::make_unique<bgpool::TaskStreams>(seed);
  R_xlen_t first = static_cast<R_xlen_t>(start);
  SEXP frame = PROTECT(R_NewEnv(R_BaseNamespace, TRUE, 29));
  static SEXP x_sym = Rf_install("X"), fun_sym = Rf_install("FUN"), i_sym = Rf_install("i");
  SEXP lapply_call = R_NilValue;
  if (!is_map) {
    Rf_defineVar(x_sym, inputs, frame);
    Rf_defineVar(fun_sym, fun, frame);
    // `...` as a closure's frame has it: the extra arguments, or missing
    SEXP dots = R_MissingArg;
    if (Rf_xlength(extra) > 0) {
      dots = argument_list(extra);
      SET_TYPEOF(dots, DOTSXP);
    }
    PROTECT(dots);
    Rf_defineVar(R_DotsSymbol, dots, frame);
    SEXP element = PROTECT(Rf_lang3(R_Bracket2Symbol, x_sym, i_sym));
    lapply_call = Rf_lang3(fun_sym, element, R_DotsSymbol);
    UNPROTECT(2);
  }
  PROTECT(lapply_call);
  Rcpp::unwindProtect([&] {
    for (R_xlen_t i = 0; i < n; ++i) {
      chunk.position = static_cast<int>(i + 1);
      if (streams) {
        double element = index == R_NilValue ? first + i + 1 : REAL(index)[first + i];
        streams->enter(static_cast<uint64_t>(element) - 1);
      }
      SEXP value;
      if (is_map) {
        SEXP args = PROTECT(argument_list(extra));
        for (R_xlen_t j = Rf_xlength(inputs) - 1; j >= 0; --j) {
          args = Rf_lcons(quoted(element(VECTOR_ELT(inputs, j), i)), args);
          UNPROTECT(1);
          PROTECT(args);
          if (names != R_NilValue && CHAR(STRING_ELT(names, j))[0] != '\0')
            SET_TAG(args, Rf_installChar(STRING_ELT(names, j)));
        }
        SEXP call = PROTECT(Rf_lcons(fun, args));
        value = Rf_eval(call, frame);
        UNPROTECT(2);
      } else {
        // a new `i` each time, as lapply() makes it: a task may keep it
        SEXP index_value = PROTECT(Rf_ScalarInteger(static_cast<int>(i + 1)));
        Rf_defineVar(i_sym, index_value, frame);
        UNPROTECT(1);
        value = R_forceAndCall(lapply_call, 1, frame);
      }
      if (MAYBE_REFERENCED(value)) value = Rf_lazy_duplicate(value);  // as lapply() does
      if (value != R_NilValue) SET_VECTOR_ELT(values, i, value);
    }
    return R_NilValue;
  });
  UNPROTECT(2);
  return values;
}

// Which element of the chunk runs now (1-based; 1 for a call request).
// [[Rcpp::export(rng = false)]]
int worker_position() { return chunk.position > 0 ? chunk.position : 1; }

// The values of the elements before the one running now.
// [[Rcpp::export(rng = false)]]
SEXP worker_chunk_values() {
  if (chunk.values == R_NilValue || chunk.position <= 1) return R_NilValue;
  return Rf_xlengthgets(chunk.values, chunk.position - 1);
}

// do.call(fun, args, quote = TRUE), as clusterCall() makes it, without
// do.call()'s own frame: fun(base::quote(a1), name = base::quote(a2), ...)
// evaluated in a frame whose enclosure is the base namespace. A function
// given by name is found from there.
// [[Rcpp::export(rng = false)]]
SEXP worker_call(SEXP fun, SEXP args) {
  SEXP frame = PROTECT(R_NewEnv(R_BaseNamespace, FALSE, 0));
  SEXP what = TYPEOF(fun) == STRSXP ? Rf_installChar(STRING_ELT(fun, 0)) : fun;
  SEXP call = PROTECT(Rf_lcons(what, argument_list(args)));
  SEXP value = Rcpp::unwindProtect([&] { return Rf_eval(call, frame); });
  UNPROTECT(2);
  return value;
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
// [[Rcpp::export(rng = false)]]
void worker_collect_later() { collect_asked = true; }

// Collects, if asked, once nothing refers to the request any more.
// [[Rcpp::export(rng = false)]]
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
// [[Rcpp::export(rng = false)]]
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
