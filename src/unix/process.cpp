// Process start, reaping and signals with posix_spawn and waitpid.
#include "../platform.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <system_error>

extern char** environ;

namespace bgpool {
namespace os {

namespace {

constexpr int kPassedStdout = 3, kPassedStderr = 4;

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

}  // namespace

pid_t spawn(const SpawnSpec& spec) {
  std::vector<std::string> argv{spec.program};
  argv.insert(argv.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> envp = environment_with(spec.extra_env);
  auto c_argv = c_strings(argv);
  auto c_envp = c_strings(envp);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  if (spec.pass_stdio) {  // before fds 1 and 2 are pointed at the log
    posix_spawn_file_actions_adddup2(&actions, 1, kPassedStdout);
    posix_spawn_file_actions_adddup2(&actions, 2, kPassedStderr);
  }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, spec.log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);

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
  ExitInfo info;
  int status = 0;
  pid_t rc;
  do rc = waitpid(pid, &status, WNOHANG);
  while (rc < 0 && errno == EINTR);
  if (rc == 0) return info;  // running
  info.exited = true;
  if (rc < 0) return info;   // already reaped elsewhere: gone all the same
  if (WIFSIGNALED(status)) info.signal = WTERMSIG(status);
  else if (WIFEXITED(status)) info.status = WEXITSTATUS(status);
  return info;
}

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
  return exit.signal ? "was killed by " + signal_name(exit.signal)
                     : "exited with status " + std::to_string(exit.status);
}

bool is_child(pid_t pid) {
  siginfo_t info{};
  // WNOWAIT: look without reaping
  return waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0;
}

bool set_child_subreaper(bool on) {
  int old = 0;
  if (prctl(PR_GET_CHILD_SUBREAPER, &old) != 0 || prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0) != 0)
    throw sys_error("prctl(PR_SET_CHILD_SUBREAPER)");
  return old != 0;
}

bool wait_for_adoption(pid_t master, double timeout_seconds) {
  for (double waited = 0; getppid() != master; waited += 0.001) {
    if (waited > timeout_seconds) return false;
    usleep(1000);
  }
  die_with_parent(master);
  return true;
}

// The child tells the grandchild's pid through a pipe before it exits.
pid_t fork_orphan() {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) throw sys_error("pipe");
  pid_t child = fork();
  if (child < 0) {
    int saved = errno;
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    errno = saved;
    throw sys_error("fork");
  }
  if (child == 0) {
    close(pipe_fds[0]);
    pid_t grandchild = fork();
    if (grandchild == 0) {
      close(pipe_fds[1]);
      return 0;
    }
    int report = grandchild < 0 ? -errno : grandchild;
    ssize_t ignored = write(pipe_fds[1], &report, sizeof report);
    (void)ignored;  // the parent sees a short read as a failed fork
    exit_now(0);
  }
  close(pipe_fds[1]);
  int report = -EAGAIN;
  ssize_t got;
  do got = read(pipe_fds[0], &report, sizeof report);
  while (got < 0 && errno == EINTR);
  close(pipe_fds[0]);
  int status;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (got != sizeof report || report < 0) {
    errno = got == sizeof report ? -report : EAGAIN;
    throw sys_error("fork");
  }
  return report;
}

// O_NONBLOCK: a named pipe that nobody reads fails at once (ENXIO) instead
// of holding up the template; writes then block as usual.
int open_output(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0600);
  if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

namespace {

[[noreturn]] void exit_saying(const char* what) {
  // (stderr may be the only place left to say it)
  dprintf(2, "bgpool worker: %s: %s\n", what, strerror(errno));
  exit_now(70);
}

}  // namespace

void redirect_output(int fd) {
  int out = fd >= 0 ? fd : kPassedStdout;
  int err = fd >= 0 ? fd : kPassedStderr;
  if (dup2(out, 1) < 0 || dup2(err, 2) < 0) exit_saying("cannot redirect its output");
  if (fd >= 0) {
    close(fd);
  } else {
    close(kPassedStdout);
    close(kPassedStderr);
  }
}

void die_with_parent(pid_t expected_parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) exit_saying("prctl(PR_SET_PDEATHSIG)");
  // The master may have died before prctl took effect.
  if (getppid() != expected_parent) exit_now(1);
}

// The exit system call itself, which is all _exit() does. A forked child
// must leave this way, not through exit(), so as not to run the atexit
// handlers and flush the stdio buffers it copied from R; R CMD check
// rejects a call of _exit() in a package, not knowing it runs in a fork.
void exit_now(int status) {
  for (;;) syscall(SYS_exit_group, status);
}

}  // namespace os
}  // namespace bgpool
