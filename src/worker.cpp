// The template and the worker's side of the link. The template, started
// by the master, forks a worker per request; a worker connects, proves
// itself, then exchanges messages with the master. Called from R/worker.R.
#include <Rcpp.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <tuple>
#include <cstring>
#include <map>
#include <set>
#include <vector>
#include <memory>
#include <stdexcept>
#include <string>

#include "clock.h"
#include "entry.h"
#include "hmac.h"
#include "platform.h"
#include "pool.h"
#include "protocol.h"
#include "r_internals.h"
#include "rng.h"
#include "serialize.h"
#include "shared.h"
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
// On a host other than the master's: messages carry no descriptors there
// (ssh forwards the link), so replies never go as shared memory.
bool remote_host = false;
// The lifeline a template on a batch job holds itself (its write end),
// whose read end its workers get. (Not descriptor 5 there, which may be
// the file R reads its expressions from.)
int own_lifeline = -1, own_lifeline_read = -1;

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

// The template's workers by slot: a remote host's master asks the
// template to signal them.
std::map<uint32_t, pid_t> children;

// A template on another host keeps the exports its workers map (see
// TemplateRequest): their segments by id, those dropped since, a channel
// to each worker by slot, and the workers that asked for an export still
// on its way. A worker there holds its end of its channel.
std::map<uint64_t, int> stored_exports;
std::set<uint64_t> dropped_exports;
std::map<uint32_t, std::unique_ptr<bgpool::Connection>> channels;
std::multimap<uint64_t, uint32_t> waiting_for_export;
std::unique_ptr<bgpool::Connection> template_channel;

// Sends the worker of `slot` the descriptor of export `id` (none if it
// was dropped: its task then fails, rather than wait).
void give_export(uint32_t slot, uint64_t id) {
  auto channel = channels.find(slot);
  if (channel == channels.end()) return;
  auto stored = stored_exports.find(id);
  int fd = stored == stored_exports.end() ? -1 : fcntl(stored->second, F_DUPFD_CLOEXEC, 0);
  bgpool::Connection& c = *channel->second;
  c.begin_write();
  c.put(&id, sizeof id);
  if (fd >= 0) c.end_write({fd});
  else c.end_write();
}

// Keeps the export the master sends (its data follows the request), and
// gives it to the workers waiting for it. False when the link failed.
bool store_export(const bgpool::TemplateRequest& request) {
  int fd = bgpool::os::create_shared_segment("bgpool", nullptr, request.size);
  void* addr = request.size ? bgpool::os::map_shared(fd, request.size) : nullptr;
  bool read = !request.size || (addr && master->read_raw(addr, request.size, -1));
  if (addr) bgpool::os::unmap(addr, request.size);
  if (!read) {
    close(fd);
    return false;
  }
  auto kept = stored_exports.find(request.request);
  if (kept != stored_exports.end()) close(kept->second);
  stored_exports[request.request] = fd;
  auto waiting = waiting_for_export.equal_range(request.request);
  for (auto it = waiting.first; it != waiting.second; ++it) give_export(it->second, request.request);
  waiting_for_export.erase(waiting.first, waiting.second);
  return true;
}

void drop_export(uint64_t id) {
  auto stored = stored_exports.find(id);
  if (stored != stored_exports.end()) {
    close(stored->second);
    stored_exports.erase(stored);
  }
  dropped_exports.insert(id);
}

// A worker's request on its channel: an export's id.
void take_export_request(uint32_t slot) {
  uint64_t id = 0;
  if (!channels[slot]->read_raw(&id, sizeof id, 5)) {
    channels.erase(slot);
    return;
  }
  if (stored_exports.count(id) || dropped_exports.count(id)) give_export(slot, id);
  else waiting_for_export.emplace(id, slot);
}

// In a worker on another host: the descriptor of an export, from its
// template (see set_segment_source()).
int fetch_export(uint64_t id) {
  if (!template_channel || !template_channel->write_raw(&id, sizeof id) ||
      template_channel->read() != bgpool::Connection::Status::Complete)
    return -1;
  int fd = template_channel->take_descriptor(0);
  template_channel->release_message();
  return fd;
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
    for (auto it = children.begin(); it != children.end(); ++it)
      if (it->second == ended.first) {
        channels.erase(it->first);
        children.erase(it);
        break;
      }
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

// Connects to the master: its Unix socket, or "tcp://host:port", where
// the master's challenge is answered with HMAC-SHA-256 of the token.
void greet_master(uint32_t slot) {
  bgpool::Hello hello{};
  std::memcpy(hello.magic, bgpool::kHelloMagic, sizeof hello.magic);
  hello.slot = slot;
  const std::string tcp = "tcp://";
  if (socket_path.compare(0, tcp.size(), tcp) == 0) {
    size_t colon = socket_path.rfind(':');
    int fd = bgpool::os::connect_tcp(socket_path.substr(tcp.size(), colon - tcp.size()),
                                     socket_path.substr(colon + 1));
    master = std::make_unique<bgpool::Connection>(fd, nullptr);
    master->set_passes_fds(false);
    char challenge[bgpool::kChallengeBytes];
    if (!master->read_raw(challenge, sizeof challenge, 30))
      throw std::runtime_error("bgpool: the master did not send its challenge: " + master->failure());
    bgpool::Digest proof = bgpool::hmac_sha256(
        token, reinterpret_cast<const uint8_t*>(challenge), sizeof challenge);
    std::memcpy(hello.token, proof.data(), proof.size());
  } else {
    std::memcpy(hello.token, token.data(), std::min(token.size(), sizeof hello.token));
    master = std::make_unique<bgpool::Connection>(bgpool::os::connect_unix(socket_path), nullptr);
  }
  if (!master->write_raw(&hello, sizeof hello))
    throw std::runtime_error("bgpool: cannot greet the master: " + master->failure());
}

// Forks the worker the master asked for. Returns in the new worker only
// (with its slot); the template answers with its pid or why it failed.
bool fork_worker(const bgpool::TemplateRequest& request, const std::string& output_path) {
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
  int channel[2] = {-1, -1};  // on another host: for exports
  if (remote_host && report.failed_step == bgpool::kForkOk) {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, channel) != 0) {
      report.error = errno;
      report.failed_step = bgpool::kForkFork;
    }
    for (int fd : channel)
      if (fd >= 0) bgpool::os::set_flags(fd, true);
  }
  if (report.failed_step == bgpool::kForkOk) {
    R_FlushConsole();  // or the fork repeats what was buffered
    pid_t pid = fork();
    if (pid == 0) {
      master.reset();  // the template's link, not ours
      channels.clear();
      for (auto& stored : stored_exports) close(stored.second);
      stored_exports.clear();
      if (channel[0] >= 0) {
        close(channel[0]);
        template_channel = std::make_unique<bgpool::Connection>(channel[1], nullptr);
        bgpool::set_segment_source(fetch_export);
      }
      if (own_lifeline >= 0) close(own_lifeline);
      catch_sigchld(false);
      close(sigchld_pipe[0]);
      close(sigchld_pipe[1]);
      my_slot = request.slot;
      bgpool::os::exit_with_lifeline(own_lifeline >= 0 ? own_lifeline_read : bgpool::kLifelineFd);
      bgpool::os::redirect_output(output, bgpool::kMasterStdoutFd, bgpool::kMasterStderrFd);
      return true;
    }
    report.pid = pid;
    if (pid > 0) children[request.slot] = pid;
    if (pid > 0 && channel[0] >= 0)
      channels[request.slot] = std::make_unique<bgpool::Connection>(channel[0], nullptr);
    else if (channel[0] >= 0)
      close(channel[0]);
    if (channel[1] >= 0) close(channel[1]);
    if (pid < 0) {
      report.error = errno;
      report.failed_step = bgpool::kForkFork;
    }
  }
  if (output >= 0) close(output);
  master->write_raw(&report, sizeof report);
  return false;
}

// Signals a worker for a master on another machine, after putting a call
// on the cancel board when asked.
void signal_worker(const bgpool::TemplateRequest& request) {
  auto child = children.find(request.slot);
  if (child == children.end()) return;  // ended already: its report is on its way
  if (request.cancel_call != 0)
    __atomic_store_n(&board[request.slot], request.cancel_call, __ATOMIC_SEQ_CST);
  kill(child->second, request.signal);
}

}  // namespace

// The template's loop: returns -1 when the master has gone, and in each
// forked worker its slot (1-based), for R to go on with worker_main().
int template_serve() {
  socket_path = take_env("BGPOOL_SOCKET");
  token = take_env("BGPOOL_TOKEN");
  size_t slots = std::stoul(take_env("BGPOOL_SLOTS"));
  const char* host = std::getenv("BGPOOL_HOST");
  uint32_t host_index = host ? static_cast<uint32_t>(std::stoul(host)) : 0;
  remote_host = std::getenv("BGPOOL_REMOTE") != nullptr;
  // A batch job has no lifeline from the master: the template holds one
  // for its workers, which exit when it does (when the master has gone).
  if (std::getenv("BGPOOL_OWN_LIFELINE"))
    std::tie(own_lifeline_read, own_lifeline) = bgpool::os::make_pipe();
  for (const char* name : {"BGPOOL_HOST", "BGPOOL_REMOTE", "BGPOOL_OWN_LIFELINE"}) unsetenv(name);
  // (what the master passed stays out of programs the workers run)
  for (int fd : {bgpool::kLifelineFd, bgpool::kMasterStdoutFd, bgpool::kMasterStderrFd})
    bgpool::os::set_flags(fd, false);
  if (own_lifeline < 0) bgpool::os::exit_with_lifeline(bgpool::kLifelineFd);
  size_t board_bytes = sizeof(uint64_t) * slots;
  int board_fd = remote_host
                     ? bgpool::os::create_shared_segment("bgpool_cancel", nullptr, board_bytes)
                     : bgpool::kBoardFd;
  board = static_cast<uint64_t*>(bgpool::os::map_shared(board_fd, board_bytes));
  close(board_fd);
  if (!board) throw std::runtime_error("bgpool: cannot map the pool's cancel board");
  std::tie(sigchld_pipe[0], sigchld_pipe[1]) = bgpool::os::make_pipe();
  bgpool::os::set_flags(sigchld_pipe[0], true);
  bgpool::os::set_flags(sigchld_pipe[1], true);
  catch_sigchld(true);
  greet_master(bgpool::kTemplateSlot - host_index);
  for (;;) {
    std::vector<pollfd> fds{{master->fd(), POLLIN, 0}, {sigchld_pipe[0], POLLIN, 0}};
    std::vector<uint32_t> asking;
    for (auto& channel : channels) {
      fds.push_back({channel.second->fd(), POLLIN, 0});
      asking.push_back(channel.first);
    }
    if (!master->has_input() && poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return -1;
    if (fds[1].revents) report_ended();
    for (size_t i = 0; i < asking.size(); ++i)
      if (fds[2 + i].revents && channels.count(asking[i])) take_export_request(asking[i]);
    if (!master->has_input() && !fds[0].revents) continue;
    bgpool::TemplateRequest request{};
    if (!master->read_raw(&request, sizeof request, -1)) return -1;
    if (request.kind == bgpool::kAskSignal) {
      signal_worker(request);
      continue;
    }
    if (request.kind == bgpool::kAskStore) {
      if (!store_export(request)) return -1;
      continue;
    }
    if (request.kind == bgpool::kAskDrop) {
      drop_export(request.request);
      continue;
    }
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
  double threshold = remote_host ? R_PosInf : REAL(VECTOR_ELT(request, kRequestShare))[0];
  SET_VECTOR_ELT(reply, kReplyValues, copies.share(values, threshold));
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
