// Worker lifecycle: start, handshake, health, replacement, shutdown.
#include "pool.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "clock.h"
#include "hmac.h"
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
  for (size_t i = 0; i < command_.hosts.size(); ++i) {
    hosts_.push_back(std::make_unique<Host>());
    Host& h = *hosts_.back();
    h.command = command_.hosts[i];
    h.template_.slot = -1;
    h.template_.host = static_cast<int>(i);
  }
}

bool Pool::owned() const { return getpid() == owner_; }

void Pool::write_token(const std::string& path) const {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw os::sys_error("cannot create the pool's token file " + path);
  std::string line = token_ + "\n";
  bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  close(fd);
  if (!written) throw os::sys_error("cannot write the pool's token file " + path);
}

// The pool listens only while workers are starting: at any other time
// nobody can connect to it at all.
class Pool::Listening {
 public:
  explicit Listening(Pool& pool) : pool_(pool) {
    pool_.listen_fd_ = os::listen_unix(pool_.socket_path_);
    for (const HostCommand& host : pool_.command_.hosts) {
      if (!host.tcp) continue;
      try {
        pool_.tcp_listen_fd_ = os::listen_tcp(pool_.command_.listen_address, &pool_.tcp_port_);
      } catch (...) {
        stop();
        throw;
      }
      break;
    }
  }
  ~Listening() { stop(); }

 private:
  void stop() {
    for (int* fd : {&pool_.listen_fd_, &pool_.tcp_listen_fd_}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
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

// Starts a host's template; connect_all() awaits its greeting.
void Pool::spawn_template(Host& h) {
  kill_worker(h.template_);
  reset(h.template_);
  h.stored.clear();
  if (h.lifeline >= 0) close(h.lifeline);
  h.lifeline = -1;
  const HostCommand& host = h.command;
  os::SpawnSpec spec;
  spec.program = host.program;
  spec.args = host.args;
  spec.extra_env = host.extra_env;
  switch (command_.output) {
    case Output::Logs:
      spec.log_path = dir_ + (host.remote() ? "/host-" + std::to_string(h.template_.host) + ".log"
                                            : "/template.log");
      break;
    case Output::File:
      spec.log_path = host.remote() ? command_.output_file : dir_ + "/template.log";
      break;
    case Output::Master:
      spec.log_path = host.remote() ? "" : dir_ + "/template.log";
      break;
  }
  if (host.tcp) spec.log_path = host.log_path;
  h.template_.log_path = spec.log_path;
  if (host.tcp) {
    // the job finds the master here, and the token in a file only the
    // user can read (never in the job's description)
    spec.extra_env.push_back("BGPOOL_SOCKET=tcp://" + command_.listen_address + ":" +
                             std::to_string(tcp_port_));
    h.template_.pid = os::spawn(spec);
    return;
  }
  if (host.remote()) {
    // ssh's stdin is the template's lifeline; the token goes first on it,
    // encrypted with the rest of the connection
    int read_end;
    std::tie(read_end, h.lifeline) = os::make_pipe();
    struct Closer {
      int fd;
      ~Closer() { close(fd); }
    } closer{read_end};
    spec.args.insert(spec.args.end(), {"-R", host.remote_socket + ":" + socket_path_,
                                       host.destination, host.remote_command});
    spec.pass_fds = {{read_end, 0}};
    h.template_.pid = os::spawn(spec);
    std::string line = token_ + "\n";
    if (write(h.lifeline, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw os::sys_error("cannot pass the pool's token to ssh");
    return;
  }
  // R's temporary directories of the template and of every worker are made
  // in the pool's directory, so none outlives the pool (see template_main()).
  spec.extra_env.insert(spec.extra_env.end(),
                        {"BGPOOL_SOCKET=" + socket_path_, "BGPOOL_TOKEN=" + token_,
                         "TMPDIR=" + dir_, "BGPOOL_SLOTS=" + std::to_string(size())});
  spec.pass_fds = {{lifeline_read_, kLifelineFd}, {board_fd_, kBoardFd}};
  if (command_.output == Output::Master)
    spec.pass_fds.insert(spec.pass_fds.end(), {{1, kMasterStdoutFd}, {2, kMasterStderrFd}});
  h.template_.pid = os::spawn(spec);
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

void Pool::ask_template(Host& h, const TemplateRequest& request, const std::string& path) {
  Worker& t = h.template_;
  if (t.conn && t.conn->write_raw(&request, sizeof request) &&
      t.conn->write_raw(path.data(), path.size()))
    return;
  std::string where = h.command.remote() ? " on " + h.command.name : "";
  throw std::runtime_error("lost the connection to the process that starts workers" + where +
                           ": " + (t.conn ? t.conn->failure() : std::string("not connected")) +
                           ". Its last output:\n" + log_tail(t));
}

void Pool::fork_workers(const std::vector<Worker*>& waiting) {
  std::vector<Worker*> templates;
  for (Worker* w : waiting) {
    Worker& t = host_of(*w).template_;
    if (t.usable() || std::find(templates.begin(), templates.end(), &t) != templates.end())
      continue;
    spawn_template(host_of(*w));
    templates.push_back(&t);
  }
  if (!templates.empty()) connect_all(templates);
  for (Worker* w : waiting) {
    kill_worker(*w);
    reset(*w);
    bool remote = this->remote(*w);
    // a remote worker writes to its template's output: the host's log here
    w->log_path = remote ? host_of(*w).template_.log_path : output_path(*w);
    w->fork_request = ++fork_requests_;
    std::string path = remote ? "" : w->log_path;
    TemplateRequest request{kAskFork, static_cast<uint32_t>(w->slot), w->fork_request,
                            static_cast<uint32_t>(path.size()), 0, 0, 0};
    ask_template(host_of(*w), request, path);
  }
}

void Pool::start(int size) {
  try {
    (void)size;  // (the hosts' counts, which R made add up to it)
    for (size_t h = 0; h < hosts_.size(); ++h)
      for (int i = 0; i < hosts_[h]->command.workers; ++i) {
        workers_.push_back(std::make_unique<Worker>());
        workers_.back()->slot = static_cast<int>(workers_.size()) - 1;
        workers_.back()->host = static_cast<int>(h);
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
  std::string challenge;  // over TCP
};

void Pool::connect_all(const std::vector<Worker*>& initial) {
  std::vector<Worker*> waiting = initial;
  std::vector<Greeting> greetings;
  double deadline = monotonic_seconds() + command_.start_timeout;
  while (!waiting.empty()) {
    std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
    std::vector<Host*> reporting;  // templates that may say what they forked
    for (auto& h : hosts_)
      if (h->template_.usable()) {
        reporting.push_back(h.get());
        fds.push_back({h->template_.conn->fd(), POLLIN, 0});
      }
    for (const Greeting& g : greetings) fds.push_back({g.conn->fd(), POLLIN, 0});
    if (tcp_listen_fd_ >= 0) fds.push_back({tcp_listen_fd_, POLLIN, 0});
    if (wait_fds(fds.data(), fds.size(), monotonic_seconds() + kWaitSlice, interrupts::poll) ==
        WaitResult::Interrupted)
      interrupts::raise_pending();
    if (fds[0].revents || (tcp_listen_fd_ >= 0 && fds.back().revents)) accept_all(greetings);
    for (size_t i = 0; i < reporting.size(); ++i)
      if (fds[1 + i].revents || reporting[i]->template_.conn->has_input())
        take_reports(*reporting[i]);
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

// Takes in what a template has said: the pid of each new worker (or why
// it could not start it), and how workers ended.
void Pool::take_reports(Host& h) {
  const std::vector<Worker*>& waiting = starting_;
  Worker& t = h.template_;
  while (t.conn && !t.conn->broken()) {
    TemplateReport report{};
    if (!t.conn->has_input()) {
      pollfd p{t.conn->fd(), POLLIN, 0};
      if (poll(&p, 1, 0) <= 0) return;
    }
    if (!t.conn->read_raw(&report, sizeof report, 5)) return;  // seen as its end
    if (report.kind == kReportEnded) {
      for (auto& w : workers_) {
        if (w->host != t.host || w->pid != report.pid || w->exit.exited) continue;
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
    if (!awaited && report.pid > 0) {
      Worker stray;
      stray.host = t.host;
      stray.slot = static_cast<int>(report.slot);
      stray.pid = report.pid;
      signal(stray, SIGKILL);
    }
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
  std::vector<int> hosts;
  for (Worker* w : waiting) {
    if (w->slot >= 0) fail_if_ended(*w, "worker " + std::to_string(w->slot + 1));
    if (std::find(hosts.begin(), hosts.end(), w->host) == hosts.end()) hosts.push_back(w->host);
  }
  for (int h : hosts) {
    const HostCommand& host = hosts_[h]->command;
    std::string who = host.tcp        ? host.program + " for " + host.name
                      : host.remote() ? "ssh to " + host.name
                                      : std::string("the process that starts workers");
    fail_if_ended(hosts_[h]->template_, host.remote() ? who + " (which starts its workers)" : who);
  }
}

void Pool::accept_all(std::vector<Greeting>& greetings) {
  for (int fd; (fd = os::accept_pending(listen_fd_)) >= 0;) {
    Greeting g;
    g.conn = std::make_unique<Connection>(fd, interrupts::poll);
    g.peer = os::peer_credentials(fd);
    // Our processes greet at once; anyone else is dropped after a second.
    g.deadline = monotonic_seconds() + 1.0;
    if (g.peer.uid == getuid()) greetings.push_back(std::move(g));
  }
  if (tcp_listen_fd_ < 0) return;
  // Over TCP anyone may connect: each gets a challenge that only the
  // pool's token answers.
  for (int fd; (fd = os::accept_pending(tcp_listen_fd_)) >= 0;) {
    os::no_delay(fd);
    Greeting g;
    g.conn = std::make_unique<Connection>(fd, interrupts::poll);
    g.conn->set_passes_fds(false);
    g.deadline = monotonic_seconds() + 5.0;
    g.challenge = os::random_hex(kChallengeBytes / 2);
    // (a new socket's buffer takes it whole; accepted sockets never raise SIGPIPE)
    if (g.conn->write_raw(g.challenge.data(), g.challenge.size()))
      greetings.push_back(std::move(g));
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
    std::string proof = token_;
    if (!g.challenge.empty()) {
      Digest mac = hmac_sha256(token_, reinterpret_cast<const uint8_t*>(g.challenge.data()),
                               g.challenge.size());
      proof.assign(mac.begin(), mac.end());
    }
    if (std::memcmp(g.hello.magic, kHelloMagic, sizeof kHelloMagic) != 0 ||
        !same_token(g.hello.token, proof))
      return true;
  }
  for (auto it = waiting.begin(); it != waiting.end(); ++it) {
    Worker* w = *it;
    bool match = w->slot < 0 ? g.hello.slot == kTemplateSlot - static_cast<uint32_t>(w->host)
                             : g.hello.slot == static_cast<uint32_t>(w->slot);
    if (!match || w->conn) continue;
    if (w->pid <= 0) return monotonic_seconds() > g.deadline;  // its report is on its way
    // (where the system does not say who connected, the token and the
    // uid, checked before, prove it). A remote host's template and workers
    // connect through its ssh process.
    Host& h = host_of(*w);
    if (h.command.tcp != !g.challenge.empty()) return true;  // (each by its own way in)
    pid_t expected = h.command.remote() ? h.template_.pid : w->pid;
    if (g.peer.pid != -1 && g.peer.pid != expected) return true;
    w->conn = std::move(g.conn);
    // (ssh and TCP carry bytes, not descriptors: exports go through the
    // host's template, other values whole)
    if (h.command.remote()) {
      w->conn->set_passes_fds(false);
      if (w->slot >= 0) w->conn->set_segment_store(&h);
    }
    // The template's link carries only small raw messages, never waits long.
    if (w->slot < 0) w->conn->set_interrupt_poll(nullptr);
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
// workers end; when the template is gone, only whether the process is (on
// another machine: it is taken as gone with its ssh connection).
bool Pool::ended(Worker& w) {
  if (!w.alive()) return true;
  Worker& t = host_of(w).template_;
  if (w.slot < 0) {
    w.exit = os::reap(w.pid);
  } else if (t.usable()) {
    take_reports(host_of(w));
    // An idle worker that died a moment ago has hung up; the template's
    // word on how it ended follows at once.
    if (w.alive() && w.conn && w.owed() == 0 && w.conn->hung_up()) {
      double until = monotonic_seconds() + kEndReportSeconds;
      while (w.alive() && monotonic_seconds() < until) {
        pollfd p{t.conn->fd(), POLLIN, 0};
        poll(&p, 1, 10);
        take_reports(host_of(w));
      }
      if (w.alive()) w.conn->mark_broken("the other side closed the connection");
    }
  } else if (remote(w) || os::gone(w.pid)) {
    w.exit.exited = true;
    w.exit.known = false;
    reaped(w);
  }
  return !w.alive();
}

// What a worker leaves behind when it ends without cleaning up after
// itself (killed): its temporary directory (on another machine, the
// template's shell removes the host's).
void Pool::reaped(Worker& w) {
  if (w.slot >= 0 && !remote(w)) os::remove_dir_tree(temp_dir_of(dir_, w.pid));
}

void Pool::wait_exit(Worker& w, double seconds) {
  double deadline = monotonic_seconds() + seconds;
  Worker& t = host_of(w).template_;
  while (!ended(w) && monotonic_seconds() < deadline) {
    if (&w != &t && t.conn && !t.conn->broken()) {
      pollfd p{t.conn->fd(), POLLIN, 0};
      poll(&p, 1, 5);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

void Pool::signal(Worker& w, int sig) {
  if (w.slot < 0 || !remote(w)) {
    os::send_signal(w.pid, sig);
    return;
  }
  Worker& t = host_of(w).template_;
  TemplateRequest request{kAskSignal, static_cast<uint32_t>(w.slot), 0, 0, sig, 0, 0};
  // (a template that is gone took its workers with it)
  if (t.usable()) t.conn->write_raw(&request, sizeof request);
}

void Pool::kill_worker(Worker& w) {
  if (w.alive()) {
    signal(w, SIGKILL);
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
  w.cancelled_at = monotonic_seconds();
  if (remote(w)) {
    Worker& t = host_of(w).template_;
    TemplateRequest request{kAskSignal, static_cast<uint32_t>(w.slot), 0, 0, SIGUSR1,
                            static_cast<uint64_t>(call_id), 0};
    if (t.usable()) t.conn->write_raw(&request, sizeof request);
    return;
  }
  __atomic_store_n(&board_[w.slot], static_cast<uint64_t>(call_id), __ATOMIC_SEQ_CST);
  os::send_signal(w.pid, SIGUSR1);
}

void Pool::replace(const std::vector<int>& slots) {
  std::vector<Worker*> waiting;
  for (int slot : slots) waiting.push_back(workers_.at(slot).get());
  if (!waiting.empty()) start_workers(waiting);
}

// Closes the descriptors and the mapping the pool holds (not its
// processes or files).
void Pool::release() {
  std::vector<int*> fds{&lock_fd_, &ready_fd_, &lifeline_, &lifeline_read_, &board_fd_};
  for (auto& h : hosts_) fds.push_back(&h->lifeline);
  for (int* fd : fds) {
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
  for (auto& h : hosts_) {
    h->template_.conn.reset();
    h->template_.pid = -1;
  }
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
    if (w->alive()) signal(*w, SIGTERM);
  for (Worker* w : workers) wait_exit(*w, 1);
  for (Worker* w : workers) kill_worker(*w);
  for (auto& h : hosts_) {
    if (h->template_.conn) shutdown(h->template_.conn->fd(), SHUT_RDWR);
    h->template_.conn.reset();
  }
  release();  // (the lifelines close: anything left of the pool exits)
  double templates_deadline = monotonic_seconds() + 2;
  for (auto& h : hosts_)
    wait_exit(h->template_, std::max(0.0, templates_deadline - monotonic_seconds()));
  for (auto& h : hosts_) kill_worker(h->template_);
  os::remove_dir_tree(dir_);
}

bool Pool::Host::put(uint64_t id, const void* data, size_t bytes) {
  if (stored.count(id)) return true;
  if (!template_.usable()) return false;
  TemplateRequest request{kAskStore, 0, id, 0, 0, 0, bytes};
  if (!template_.conn->write_raw(&request, sizeof request) ||
      !template_.conn->write_raw(data, bytes))
    return false;
  stored.insert(id);
  return true;
}

void Pool::drop_released_exports() {
  for (uint64_t id : take_released_exports())
    for (auto& h : hosts_) {
      if (!h->stored.erase(id) || !h->template_.usable()) continue;
      TemplateRequest request{kAskDrop, 0, id, 0, 0, 0, 0};
      h->template_.conn->write_raw(&request, sizeof request);
    }
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
