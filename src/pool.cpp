// Worker lifecycle: start, handshake, health, replacement, shutdown.
#include "pool.h"

#include "clock.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <Rcpp.h>

namespace bgpool {

namespace {

void check_interrupt(void*) { R_CheckUserInterrupt(); }

bool same_token(const char* a, const std::string& b) {
  unsigned char diff = 0;  // constant time: no early exit on the first mismatch
  for (size_t i = 0; i < b.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

}  // namespace

bool interrupt_pending() { return !R_ToplevelExec(check_interrupt, nullptr); }

void check_user_interrupt() {
  Rcpp::unwindProtect([] {
    R_CheckUserInterrupt();
    return R_NilValue;
  });
}

Pool::Pool(const WorkerCommand& command, const std::string& temp_dir)
    : command_(command) {
  dir_ = os::make_private_dir(temp_dir);
  socket_path_ = dir_ + "/socket";
  token_ = os::random_hex(32);
}

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

// Makes the pool adopt the workers the template forks while it lives.
class Adopting {
 public:
  Adopting() : previous_(os::set_child_subreaper(true)) {}
  ~Adopting() { os::set_child_subreaper(previous_); }

 private:
  bool previous_;
};

void Pool::reset(Worker& w) {
  w.pid = -1;
  w.conn.reset();
  w.exit = os::ExitInfo();
  w.in_flight.clear();
  w.node_calls.clear();
  w.stale_replies = 0;
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
  spec.extra_env.push_back("BGPOOL_MASTER_PID=" + std::to_string(getpid()));
  // R's temporary directories of the template and of every worker are made
  // in the pool's directory, so none outlives the pool (see template_main()).
  spec.extra_env.push_back("TMPDIR=" + dir_);
  spec.log_path = template_.log_path = dir_ + "/template.log";
  spec.pass_stdio = command_.output == Output::Master;
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
    ForkRequest request{static_cast<uint32_t>(w->slot),
                        static_cast<uint32_t>(w->log_path.size())};
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
    std::vector<Worker*> waiting;
    for (auto& w : workers_) waiting.push_back(w.get());
    Listening listening(*this);
    Adopting adopting;
    fork_workers(waiting);
    connect_all(waiting);
  } catch (...) {
    stop();
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
    for (const Greeting& g : greetings) fds.push_back({g.conn->fd(), POLLIN, 0});
    poll(fds.data(), fds.size(), 100);
    if (fds[0].revents) accept_all(greetings);
    for (size_t i = 0; i < greetings.size();)
      if (greet(greetings[i], waiting)) greetings.erase(greetings.begin() + i);
      else ++i;
    if (waiting.empty()) break;
    // Forked workers have no pid until they connect: while they start, the
    // template must stay alive.
    Worker& starter = waiting[0]->pid > 0 ? *waiting[0] : template_;
    starter.exit = os::reap(starter.pid);
    if (starter.exit.exited)
      throw std::runtime_error(
          std::string(&starter == &template_ ? "the process that starts workers"
                                             : "a worker") +
          " " + os::describe_exit(starter.exit) + " while starting. Its last output:\n" +
          log_tail(starter));
    check_user_interrupt();
    if (monotonic_seconds() > deadline)
      throw std::runtime_error(std::to_string(waiting.size()) +
                               " worker(s) did not connect within " +
                               std::to_string(static_cast<int>(command_.start_timeout)) +
                               " seconds; start the pool with a longer setup_timeout "
                               "(init_pool(setup_timeout = ) or options(bgpool.start_timeout))");
  }
}

void Pool::accept_all(std::vector<Greeting>& greetings) {
  for (int fd; (fd = os::accept_unix(listen_fd_)) >= 0;) {
    Greeting g;
    g.conn = std::make_unique<Connection>(fd, interrupt_pending);
    g.peer = os::peer_credentials(fd);
    // Our processes greet at once; anyone else is dropped after a second.
    g.deadline = monotonic_seconds() + 1.0;
    if (g.peer.uid == getuid()) greetings.push_back(std::move(g));
  }
}

// Reads what has come of a greeting; admits it if it is the template or
// one of the workers we wait for: the pool's token and (for a worker) a
// process the master has adopted. Returns true when done with it.
bool Pool::greet(Greeting& g, std::vector<Worker*>& waiting) {
  char* into = reinterpret_cast<char*>(&g.hello) + g.received;
  ssize_t got = recv(g.conn->fd(), into, sizeof g.hello - g.received, MSG_DONTWAIT);
  if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) return true;
  if (got > 0) g.received += static_cast<size_t>(got);
  if (g.received < sizeof g.hello) return monotonic_seconds() > g.deadline;
  const Hello& hello = g.hello;
  if (std::memcmp(hello.magic, kHelloMagic, sizeof kHelloMagic) != 0 ||
      !same_token(hello.token, token_))
    return true;
  for (auto it = waiting.begin(); it != waiting.end(); ++it) {
    Worker* w = *it;
    bool match = w == &template_ ? hello.slot == kTemplateSlot && g.peer.pid == w->pid
                                 : hello.slot == static_cast<uint32_t>(w->slot) &&
                                       os::is_child(g.peer.pid);
    if (!match) continue;
    w->pid = g.peer.pid;
    w->conn = std::move(g.conn);
    if (w->mirror_fd >= 0) mirror(*w, false);
    waiting.erase(it);
    break;
  }
  return true;
}

bool Pool::check_workers() {
  bool all_usable = true;
  for (auto& w : workers_) {
    if (w->alive()) w->exit = os::reap(w->pid);
    all_usable = all_usable && w->usable();
  }
  return all_usable;
}

void Pool::wait_exit(Worker& w, double seconds) {
  double deadline = monotonic_seconds() + seconds;
  while (w.alive()) {
    w.exit = os::reap(w.pid);
    if (!w.exit.exited && monotonic_seconds() > deadline) return;
    if (!w.exit.exited) std::this_thread::sleep_for(std::chrono::milliseconds(5));
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
  double deadline = monotonic_seconds() + 0.5;
  while (w.alive() && monotonic_seconds() < deadline) {
    w.exit = os::reap(w.pid);
    if (!w.exit.exited) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string how = w.exit.exited ? os::describe_exit(w.exit)
                                  : "lost its connection (" +
                                        (w.conn ? w.conn->failure() : std::string("closed")) + ")";
  kill_worker(w);
  return how;
}

void Pool::mirror(Worker& w, bool ready, int fd) {
  if (fd >= 0) w.mirror_fd = fd;
  if (w.mirror_fd < 0) return;
  if (ready || !w.conn) {
    int readable = os::readable_socket();
    os::replace_fd(readable, w.mirror_fd);
    close(readable);
  } else {
    os::replace_fd(w.conn->fd(), w.mirror_fd);
  }
}

void Pool::cancel(Worker& w, double call_id) {
  if (!w.alive()) return;
  sigval value;
  value.sival_int = call_tag(call_id);
  sigqueue(w.pid, SIGUSR1, value);
  w.cancelled_at = monotonic_seconds();
}

std::vector<int> Pool::replace_unusable() {
  check_workers();
  std::vector<Worker*> waiting;
  std::vector<int> slots;
  for (auto& w : workers_) {
    // a worker that owes a cluster node its reply stays until that node
    // reads how it ended (R/cluster.R)
    if (w->usable() || !w->node_calls.empty()) continue;
    waiting.push_back(w.get());
    slots.push_back(w->slot);
  }
  if (waiting.empty()) return slots;
  Listening listening(*this);
  Adopting adopting;
  fork_workers(waiting);
  connect_all(waiting);
  return slots;
}

void Pool::stop() {
  if (stopped_) return;
  stopped_ = true;
  // Closing the connection is the signal to exit: workers leave their loop
  // at end of stream. Those that don't within a grace period are killed.
  std::vector<Worker*> all{&template_};
  for (auto& w : workers_) all.push_back(w.get());
  // (a mirror descriptor would otherwise keep a socket open)
  for (Worker* w : all) {
    if (w->conn) os::shutdown_socket(w->conn->fd());
    w->conn.reset();
  }
  double deadline = monotonic_seconds() + 2;
  for (Worker* w : all) wait_exit(*w, std::max(0.0, deadline - monotonic_seconds()));
  for (Worker* w : all)
    if (w->alive()) os::send_signal(w->pid, SIGTERM);
  for (Worker* w : all) wait_exit(*w, 1);
  for (Worker* w : all) kill_worker(*w);
  os::remove_dir_tree(dir_);
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

}  // namespace bgpool
