// Processes: start with posix_spawn, reap with waitpid, signals, the
// lifeline that ends a worker with its master.
#include "../platform.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <system_error>
#include <thread>

extern char** environ;

namespace bgpool {
namespace os {

namespace {

// posix_spawn's C interface wants mutable char*; the strings outlive the call.
std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(&s[0]);
  out.push_back(nullptr);
  return out;
}

std::string env_name(const std::string& entry) { return entry.substr(0, entry.find('=')); }

// Our environment with `extra` ("NAME=value") added. An entry replaces any
// earlier one of its name, as getenv() would find the first.
std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) out.emplace_back(*e);
  for (const std::string& entry : extra) {
    std::string name = env_name(entry);
    out.erase(std::remove_if(out.begin(), out.end(),
                             [&](const std::string& e) { return env_name(e) == name; }),
              out.end());
    out.push_back(entry);
  }
  return out;
}

ExitInfo exit_info(int status) {
  ExitInfo info;
  info.exited = true;
  if (WIFSIGNALED(status)) info.signal = WTERMSIG(status);
  else if (WIFEXITED(status)) info.status = WEXITSTATUS(status);
  return info;
}

constexpr int kFirstCopyFd = 64;

[[noreturn]] void exit_saying(const char* what) {
  // (stderr may be the only place left to say it)
  dprintf(2, "bgpool worker: %s: %s\n", what, strerror(errno));
  exit_now(70);
}

}  // namespace

pid_t spawn(const SpawnSpec& spec) {
  std::vector<std::string> argv{spec.program};
  argv.insert(argv.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> envp = environment_with(spec.extra_env);
  auto c_argv = c_strings(argv);
  auto c_envp = c_strings(envp);

  // Descriptors are passed from copies numbered above any the child gets,
  // so that no dup2() overwrites a source another still needs, and none is
  // its own target (which would keep its close-on-exec flag).
  struct Copies {
    std::vector<int> fds;
    ~Copies() {
      for (int fd : fds) close(fd);
    }
  } copies;
  for (const auto& pass : spec.pass_fds) {
    int copy = fcntl(pass.first, F_DUPFD_CLOEXEC, kFirstCopyFd);
    if (copy < 0) throw sys_error("cannot pass a descriptor to " + spec.program);
    copies.fds.push_back(copy);
  }

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  // (before fds 1 and 2 are pointed at the log, when they are passed on)
  for (size_t i = 0; i < spec.pass_fds.size(); ++i)
    posix_spawn_file_actions_adddup2(&actions, copies.fds[i], spec.pass_fds[i].second);
  auto passed = [&](int fd) {
    return std::any_of(spec.pass_fds.begin(), spec.pass_fds.end(),
                       [fd](const std::pair<int, int>& pass) { return pass.second == fd; });
  };
  if (!passed(0)) posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (!spec.log_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, spec.log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }

  // R blocks or catches some signals; the child starts from a clean slate.
  sigset_t no_signals, default_signals;
  sigemptyset(&no_signals);
  sigemptyset(&default_signals);
  for (int sig : {SIGINT, SIGPIPE, SIGTERM, SIGCHLD, SIGUSR1, SIGUSR2})
    sigaddset(&default_signals, sig);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                       POSIX_SPAWN_SETSIGDEF);

  pid_t pid = -1;
  int rc = posix_spawn(&pid, spec.program.c_str(), &actions, &attr,
                       c_argv.data(), c_envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    throw sys_error("cannot start " + spec.program);
  }
  return pid;
}

ExitInfo reap(pid_t pid) {
  int status = 0;
  pid_t rc;
  do rc = waitpid(pid, &status, WNOHANG);
  while (rc < 0 && errno == EINTR);
  if (rc == 0) return ExitInfo();  // running
  if (rc < 0) {                    // not ours to reap: gone all the same
    ExitInfo info;
    info.exited = true;
    info.known = false;
    return info;
  }
  return exit_info(status);
}

std::pair<pid_t, ExitInfo> reap_any() {
  int status = 0;
  pid_t rc;
  do rc = waitpid(-1, &status, WNOHANG);
  while (rc < 0 && errno == EINTR);
  if (rc <= 0) return {0, ExitInfo()};
  return {rc, exit_info(status)};
}

bool gone(pid_t pid) { return pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH); }

void send_signal(pid_t pid, int sig) {
  if (pid > 0) kill(pid, sig);
}

// (not sigabbrev_np(), which glibc has only since 2.32)
std::string signal_name(int sig) {
  static const struct {
    int number;
    const char* name;
  } names[] = {{SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"},
               {SIGILL, "SIGILL"},   {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"},
               {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"},
               {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
               {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},
               {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"}, {SIGSYS, "SIGSYS"}};
  for (const auto& entry : names)
    if (entry.number == sig) return entry.name;
  return "signal " + std::to_string(sig);
}

std::string describe_exit(const ExitInfo& exit) {
  if (!exit.known) return "ended (how is not known: the process that started it is gone)";
  return exit.signal ? "was killed by " + signal_name(exit.signal)
                     : "exited with status " + std::to_string(exit.status);
}

std::pair<int, int> make_pipe() {
  int fds[2];
  if (pipe(fds) != 0) throw sys_error("pipe");
  set_flags(fds[0], false);
  set_flags(fds[1], false);
  return {fds[0], fds[1]};
}

void exit_with_lifeline(int fd) {
  // The thread takes no signals (they stay the main thread's, where R acts
  // on them): it is made while all are blocked here, and inherits that.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  std::thread([fd] {
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      int rc = poll(&p, 1, -1);
      if (rc > 0) exit_now(1);  // the master's end closed (nothing is ever written)
      if (rc < 0 && errno != EINTR) exit_now(1);
    }
  }).detach();
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

// O_NONBLOCK: a named pipe that nobody reads fails at once (ENXIO) instead
// of holding up the template; writes then block as usual.
int open_output(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0600);
  if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

void redirect_output(int fd, int out, int err) {
  if (dup2(fd >= 0 ? fd : out, 1) < 0 || dup2(fd >= 0 ? fd : err, 2) < 0)
    exit_saying("cannot redirect its output");
  if (fd >= 0) close(fd);
}

// The exit system call itself, which is all _exit() does. A forked child
// must leave this way, not through exit(), so as not to run the atexit
// handlers and flush the stdio buffers it copied from R; R CMD check
// rejects a call of _exit() in a package, not knowing it runs in a fork.
void exit_now(int status) {
#if defined(SYS_exit_group)
  for (;;) syscall(SYS_exit_group, status);
#else
  for (;;) syscall(SYS_exit, status);
#endif
}

}  // namespace os
}  // namespace bgpool
