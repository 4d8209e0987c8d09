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

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
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
  prctl(PR_GET_CHILD_SUBREAPER, &old);
  prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0);
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

bool fork_orphan() {
  pid_t child = fork();
  if (child < 0) throw sys_error("fork");
  if (child == 0) {
    pid_t grandchild = fork();
    if (grandchild != 0) exit_now(grandchild < 0 ? 1 : 0);
    return true;
  }
  int status;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return false;
}

void redirect_output(const std::string& path) {
  if (path.empty()) {
    dup2(kPassedStdout, 1);
    dup2(kPassedStderr, 2);
    close(kPassedStdout);
    close(kPassedStderr);
  } else {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return;
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
}

void die_with_parent(pid_t expected_parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
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
