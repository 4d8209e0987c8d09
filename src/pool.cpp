// Worker lifecycle: start, handshake, health, replacement, shutdown.
#include "pool.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <tuple>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "clock.h"
#include "interrupts.h"
#include "node_connection.h"
#include "wait.h"

namespace bgpool {

namespace {

bool same_token(const char* a, const std::string& b) {
  unsigned char diff = 0;  // constant time: no early exit on the first mismatch
  for (size_t i = 0; i < b.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

constexpr double kLogCheckSeconds = 2;
constexpr size_t kLogKeepBytes = 256 * 1024;
// How long an idle worker that hung up may wait for the template to say how it ended.
constexpr double kEndReportSeconds = 0.5;

// A worker's own temporary directory (TMPDIR; see worker_connect()).
std::string temp_dir_of(const std::string& pool_dir, pid_t pid) {
  return pool_dir + "/tmp-" + std::to_string(pid);
}

}  // namespace

Pool::Pool(const WorkerCommand& command, const std::string& temp_dir)
    : command_(command), owner_(getpid()) {
  dir_ = os::make_private_dir(temp_dir);
  try {
    lock_fd_ = os::lock_pool_dir(dir_);
    std::tie(lifeline_read_, lifeline_) = os::make_pipe();
  } catch (...) {
    if (lock_fd_ >= 0) close(lock_fd_);
    os::remove_dir_tree(dir_);
    throw;
  }
  socket_path_ = dir_ + "/socket";
  token_ = os::random_hex(32);
}

bool Pool::owned() const { return getpid() == owner_; }

// The pool listens only while workers are starting: at any other time
// nobody can connect to it at all.
class Pool::Listening {
 public:
  explicit Listening(Pool& pool) : pool_(pool) {
    pool_.listen_fd_ = os::listen_unix(pool_.socket_path_);
  }
  ~Listening() {
    close(pool_.listen_fd_);
    pool_.listen_fd_ = -1;
    unlink(pool_.socket_path_.c_str());
  }

 private:
  Pool& pool_;
};

Pool::~Pool() { stop(); }

void Pool::reset(Worker& w) {
  w.pid = -1;
  w.conn.reset();
  w.exit = os::ExitInfo();
  w.in_flight.clear();
  w.node_calls.clear();
  w.job_call = -1;
  w.busy_since = w.cancelled_at = 0;
}

void Pool::start_template() {
  kill_worker(template_);
  reset(template_);
  template_.slot = -1;
  os::SpawnSpec spec;
  spec.program = command_.program;
  spec.args = command_.args;
  spec.extra_env = command_.extra_env;
  spec.extra_env.push_back("BGPOOL_SOCKET=" + socket_path_);
  spec.extra_env.push_back("BGPOOL_TOKEN=" + token_);
  // R's temporary directories of the template and of every worker are made
  // in the pool's directory, so none outlives the pool (see template_main()).
  spec.extra_env.push_back("TMPDIR=" + dir_);
  spec.extra_env.push_back("BGPOOL_SLOTS=" + std::to_string(size()));
  spec.log_path = template_.log_path = dir_ + "/template.log";
  spec.pass_fds = {{lifeline_read_, kLifelineFd}, {board_fd_, kBoardFd}};
  if (command_.output == Output::Master)
    spec.pass_fds.insert(spec.pass_fds.end(), {{1, kMasterStdoutFd}, {2, kMasterStderrFd}});
  template_.pid = os::spawn(spec);
  connect_all({&template_});
}

// The path the template is told to send a worker's output to; empty for
// the master's own stdout and stderr.
std::string Pool::output_path(const Worker& w) const {
  switch (command_.output) {
    case Output::File:
      return command_.output_file;
    case Output::Master:
      return "";
    case Output::Logs:
      break;
  }
  return dir_ + "/worker-" + std::to_string(w.slot + 1) + ".log";
}

void Pool::fork_workers(const std::vector<Worker*>& waiting) {
  if (!template_.usable()) start_template();
  for (Worker* w : waiting) {
    kill_worker(*w);
    reset(*w);
    w->log_path = output_path(*w);
    w->fork_request = ++fork_requests_;
    ForkRequest request{static_cast<uint32_t>(w->slot),
                        static_cast<uint32_t>(w->log_path.size()), w->fork_request};
    if (!template_.conn->write_raw(&request, sizeof request) ||
        !template_.conn->write_raw(w->log_path.data(), w->log_path.size()))
      throw std::runtime_error("lost the connection to the process that starts workers: " +
                               template_.conn->failure() + ". Its last output:\n" +
                               log_tail(template_));
  }
}

void Pool::start(int size) {
  try {
    for (int i = 0; i < size; ++i) {
      workers_.push_back(std::make_unique<Worker>());
      workers_.back()->slot = i;
    }
    size_t bytes = sizeof(uint64_t) * static_cast<size_t>(size);
    board_fd_ = os::create_shared_segment("bgpool_cancel", nullptr, bytes);
    board_ = static_cast<uint64_t*>(os::map_shared(board_fd_, bytes));
    if (!board_) throw os::sys_error("cannot map the pool's cancel board");
    std::vector<Worker*> waiting;
    for (auto& w : workers_) waiting.push_back(w.get());
    start_workers(waiting);
  } catch (...) {
    stop();
    throw;
  }
}

// Forks and greets the workers in `waiting`. If that fails or is
// interrupted, those that started without greeting are stopped: a later
// start begins afresh.
void Pool::start_workers(const std::vector<Worker*>& waiting) {
  // (the workers whose fork reports are awaited, for take_reports())
  struct Starting {
    std::vector<Worker*>& list;
    ~Starting() { list.clear(); }
  } starting{starting_};
  starting_ = waiting;
  try {
    Listening listening(*this);
    fork_workers(waiting);
    connect_all(waiting);
  } catch (...) {
    for (Worker* w : waiting)
      if (!w->conn) kill_worker(*w);
    throw;
  }
}

// A connection that has yet to greet: all are served at once, so a
// stranger that connects and stays silent holds up nobody.
struct Pool::Greeting {
  std::unique_ptr<Connection> conn;
  os::PeerCredentials peer;
  double deadline;
  Hello hello{};
  size_t received = 0;
};

void Pool::connect_all(const std::vector<Worker*>& initial) {
  std::vector<Worker*> waiting = initial;
  std::vector<Greeting> greetings;
  double deadline = monotonic_seconds() + command_.start_timeout;
  while (!waiting.empty()) {
    std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
    bool forking = template_.conn && &template_ != waiting[0];
    if (forking) fds.push_back({template_.conn->fd(), POLLIN, 0});
    for (const Greeting& g : greetings) fds.push_back({g.conn->fd(), POLLIN, 0});
    if (wait_fds(fds.data(), fds.size(), monotonic_seconds() + kWaitSlice, interrupts::poll) ==
        WaitResult::Interrupted)
      interrupts::raise_pending();
    if (fds[0].revents) accept_all(greetings);
    if (forking && (fds[1].revents || template_.conn->has_input())) take_reports();
    for (size_t i = 0; i < greetings.size();)
      if (greet(greetings[i], waiting)) greetings.erase(greetings.begin() + i);
      else ++i;
    if (waiting.empty()) break;
    check_started(waiting);
    if (monotonic_seconds() > deadline)
      throw std::runtime_error(std::to_string(waiting.size()) +
                               " worker(s) did not connect within " +
                               std::to_string(static_cast<int>(command_.start_timeout)) +
                               " seconds; start the pool with a longer setup_timeout "
                               "(init_pool(setup_timeout = ) or options(bgpool.start_timeout))");
  }
}

// Takes in what the template has said: the pid of each new worker (or why
// it could not start it), and how workers ended.
void Pool::take_reports() {
  const std::vector<Worker*>& waiting = starting_;
  while (template_.conn && !template_.conn->broken()) {
    TemplateReport report{};
    if (!template_.conn->has_input()) {
      pollfd p{template_.conn->fd(), POLLIN, 0};
      if (poll(&p, 1, 0) <= 0) return;
    }
    if (!template_.conn->read_raw(&report, sizeof report, 5)) return;  // seen as its end
    if (report.kind == kReportEnded) {
      for (auto& w : workers_) {
        if (w->pid != report.pid || w->exit.exited) continue;
        w->exit.exited = true;
        w->exit.status = report.status;
        w->exit.signal = report.signal;
        reaped(*w);
      }
      continue;
    }
    bool awaited = false;
    for (Worker* w : waiting) {
      if (w->fork_request != report.request) continue;
      awaited = true;
      if (report.pid > 0) {
        w->pid = report.pid;
        break;
      }
      std::string what = report.failed_step == kForkOpenOutput
                             ? "cannot open the file for its output, " + w->log_path
                             : std::string("cannot fork it");
      throw std::runtime_error("could not start worker " + std::to_string(w->slot + 1) + ": " +
                               what + ": " + strerror(report.error));
    }
    // a worker started for a start given up: it is nobody's
    if (!awaited && report.pid > 0) os::send_signal(report.pid, SIGKILL);
  }
}

// A worker, or the template, that ended while starting fails the start at
// once, with what it said.
void Pool::check_started(const std::vector<Worker*>& waiting) {
  auto fail_if_ended = [&](Worker& w, const std::string& who) {
    if (w.pid <= 0 || !ended(w)) return;
    throw std::runtime_error(who + " " + os::describe_exit(w.exit) +
                             " while starting. Its last output:\n" + log_tail(w));
  };
  for (Worker* w : waiting)
    if (w != &template_) fail_if_ended(*w, "worker " + std::to_string(w->slot + 1));
  fail_if_ended(template_, "the process that starts workers");
}

void Pool::accept_all(std::vector<Greeting>& greetings) {
  for (int fd; (fd = os::accept_unix(listen_fd_)) >= 0;) {
    Greeting g;
    g.conn = std::make_unique<Connection>(fd, interrupts::poll);
    g.peer = os::peer_credentials(fd);
    // Our processes greet at once; anyone else is dropped after a second.
    g.deadline = monotonic_seconds() + 1.0;
    if (g.peer.uid == getuid()) greetings.push_back(std::move(g));
  }
}

// Reads what has come of a greeting; admits it if it is the template or
// one of the workers we wait for: the pool's token, and the pid the
// template reported for that worker (a greeting may come before that
// report: it waits for it). Returns true when done with it.
bool Pool::greet(Greeting& g, std::vector<Worker*>& waiting) {
  if (g.received < sizeof g.hello) {
    char* into = reinterpret_cast<char*>(&g.hello) + g.received;
    ssize_t got = recv(g.conn->fd(), into, sizeof g.hello - g.received, MSG_DONTWAIT);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) return true;
    if (got > 0) g.received += static_cast<size_t>(got);
    if (g.received < sizeof g.hello) return monotonic_seconds() > g.deadline;
    if (std::memcmp(g.hello.magic, kHelloMagic, sizeof kHelloMagic) != 0 ||
        !same_token(g.hello.token, token_))
      return true;
  }
  for (auto it = waiting.begin(); it != waiting.end(); ++it) {
    Worker* w = *it;
    bool match = w == &template_ ? g.hello.slot == kTemplateSlot
                                 : g.hello.slot == static_cast<uint32_t>(w->slot);
    if (!match || w->conn) continue;
    if (w->pid <= 0) return monotonic_seconds() > g.deadline;  // its report is on its way
    // (where the system does not say who connected, the token and the
    // uid, checked before, prove it)
    if (g.peer.pid != -1 && g.peer.pid != w->pid) return true;
    w->conn = std::move(g.conn);
    // The template's link carries only small raw messages, never waits long.
    if (w == &template_) w->conn->set_interrupt_poll(nullptr);
    if (w->poll_fd) *w->poll_fd = w->conn->fd();
    waiting.erase(it);
    return true;
  }
  return true;
}

bool Pool::check_workers() {
  bool all_usable = true;
  for (auto& w : workers_) {
    if (w->alive()) ended(*w);
    all_usable = all_usable && w->usable();
  }
  return all_usable;
}

// Whether `w` has ended, as far as the master can tell now: the template
// is its parent (the master reaps the template itself), and says how its
// workers end; when the template is gone, only whether the process is.
bool Pool::ended(Worker& w) {
  if (!w.alive()) return true;
  if (&w == &template_) {
    w.exit = os::reap(w.pid);
  } else if (template_.usable()) {
    take_reports();
    // An idle worker that died a moment ago has hung up; the template's
    // word on how it ended follows at once.
    if (w.alive() && w.conn && w.owed() == 0 && w.conn->hung_up()) {
      double until = monotonic_seconds() + kEndReportSeconds;
      while (w.alive() && monotonic_seconds() < until) {
        pollfd p{template_.conn->fd(), POLLIN, 0};
        poll(&p, 1, 10);
        take_reports();
      }
      if (w.alive()) w.conn->mark_broken("the other side closed the connection");
    }
  } else if (os::gone(w.pid)) {
    w.exit.exited = true;
    w.exit.known = false;
    reaped(w);
  }
  return !w.alive();
}

// What a worker leaves behind when it ends without cleaning up after
// itself (killed): its temporary directory.
void Pool::reaped(Worker& w) {
  if (&w != &template_) os::remove_dir_tree(temp_dir_of(dir_, w.pid));
}

void Pool::wait_exit(Worker& w, double seconds) {
  double deadline = monotonic_seconds() + seconds;
  while (!ended(w) && monotonic_seconds() < deadline) {
    if (&w != &template_ && template_.conn && !template_.conn->broken()) {
      pollfd p{template_.conn->fd(), POLLIN, 0};
      poll(&p, 1, 5);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

void Pool::kill_worker(Worker& w) {
  if (w.alive()) {
    os::send_signal(w.pid, SIGKILL);
    wait_exit(w, 5);
  }
  if (w.conn) w.conn->mark_broken("worker stopped");
}

std::string Pool::retire(Worker& w) {
  wait_exit(w, 0.5);
  std::string how = w.exit.exited ? os::describe_exit(w.exit)
                                  : "lost its connection (" +
                                        (w.conn ? w.conn->failure() : std::string("closed")) + ")";
  kill_worker(w);
  return how;
}

void Pool::cancel(Worker& w, double call_id) {
  if (!w.alive() || !board_) return;
  __atomic_store_n(&board_[w.slot], static_cast<uint64_t>(call_id), __ATOMIC_SEQ_CST);
  os::send_signal(w.pid, SIGUSR1);
  w.cancelled_at = monotonic_seconds();
}

void Pool::replace(const std::vector<int>& slots) {
  std::vector<Worker*> waiting;
  for (int slot : slots) waiting.push_back(workers_.at(slot).get());
  if (!waiting.empty()) start_workers(waiting);
}

// Closes the descriptors and the mapping the pool holds (not its
// processes or files).
void Pool::release() {
  for (int* fd : {&lock_fd_, &ready_fd_, &lifeline_, &lifeline_read_, &board_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (board_) os::unmap(board_, sizeof(uint64_t) * workers_.size());
  board_ = nullptr;
}

// In a process forked from the owner: closes this copy's descriptors,
// without a word to the workers (they are the owner's).
void Pool::let_go() {
  for (auto& w : workers_) {
    w->conn.reset();
    w->pid = -1;
  }
  template_.conn.reset();
  template_.pid = -1;
  release();
}

void Pool::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& w : workers_)
    if (w->poll_fd) detach_poll_connection(w->poll_fd, os::always_ready_fd());
  if (!owned()) {
    let_go();
    return;
  }
  // Closing the connection is the signal to exit: workers leave their loop
  // at end of stream. Those that don't within a grace period are killed.
  // The template goes last: it reaps the workers and says how they ended.
  std::vector<Worker*> workers;
  for (auto& w : workers_) workers.push_back(w.get());
  for (Worker* w : workers) {
    if (w->conn) shutdown(w->conn->fd(), SHUT_RDWR);
    w->conn.reset();
  }
  double deadline = monotonic_seconds() + 2;
  for (Worker* w : workers) wait_exit(*w, std::max(0.0, deadline - monotonic_seconds()));
  for (Worker* w : workers)
    if (w->alive()) os::send_signal(w->pid, SIGTERM);
  for (Worker* w : workers) wait_exit(*w, 1);
  for (Worker* w : workers) kill_worker(*w);
  if (template_.conn) shutdown(template_.conn->fd(), SHUT_RDWR);
  template_.conn.reset();
  release();  // (the lifeline closes: anything left of the pool exits)
  wait_exit(template_, 2);
  kill_worker(template_);
  os::remove_dir_tree(dir_);
}

int Pool::ready_fd() {
  if (ready_fd_ < 0) ready_fd_ = os::ready_socket();
  return ready_fd_;
}

std::string Pool::log_tail(const Worker& w, size_t max_lines) const {
  // only a file: reading a terminal or a pipe given as outfile would wait
  struct stat info;
  if (stat(w.log_path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) return "";
  std::ifstream in(w.log_path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff from = std::max<std::streamoff>(0, size - 8192);
  in.seekg(from);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  if (from > 0 && !lines.empty()) lines.erase(lines.begin());  // partial line
  size_t first = lines.size() > max_lines ? lines.size() - max_lines : 0;
  std::string out;
  for (size_t i = first; i < lines.size(); ++i) out += lines[i] + "\n";
  return out;
}

void Pool::trim_logs() {
  if (command_.output != Output::Logs || !(log_limit_ > 0)) return;
  double now = monotonic_seconds();
  if (now - logs_checked_ < kLogCheckSeconds) return;
  logs_checked_ = now;
  size_t keep = std::min(kLogKeepBytes, static_cast<size_t>(log_limit_ / 2));
  for (auto& w : workers_) os::trim_file(w->log_path, static_cast<size_t>(log_limit_), keep);
}

}  // namespace bgpool
