// Operating-system services the portable core needs: processes, Unix
// sockets, private directories, shared memory, randomness. Implemented in
// unix/.
#pragma once

#if !defined(__linux__)
#error "bgpool's native core needs Linux for now: it uses memfd_create(), prctl() (PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER) and SO_PEERCRED, which other systems lack."
#endif

#include <sys/types.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <vector>

namespace bgpool {
namespace os {

inline std::system_error sys_error(const std::string& what) {
  return std::system_error(errno, std::generic_category(), what);
}

struct SpawnSpec {
  std::string program;
  std::vector<std::string> args;            // argv[1..]
  std::vector<std::string> extra_env;       // "NAME=value", added to ours
  std::string log_path;                     // stdout and stderr go here
  // Also hand the child our stdout and stderr, as its fds 3 and 4, for
  // the processes it forks (see redirect_output).
  bool pass_stdio = false;
};

// Starts a process in its own process group, so that Ctrl-C in the
// master's terminal reaches the master only. Throws std::system_error.
pid_t spawn(const SpawnSpec& spec);

struct ExitInfo {
  bool exited = false;   // false: still running
  int status = 0;        // exit status, when !signaled
  int signal = 0;        // terminating signal, or 0
};
// Non-blocking: reaps the process if it has ended.
ExitInfo reap(pid_t pid);
void send_signal(pid_t pid, int sig);
std::string signal_name(int sig);
// "exited with status 3", "was killed by SIGKILL"
std::string describe_exit(const ExitInfo& exit);

// A listening Unix socket at `path` (non-blocking, close-on-exec).
int listen_unix(const std::string& path);
// Accepts one pending connection or returns -1 when none is waiting.
int accept_unix(int listen_fd);
// Connects (blocking) to `path`; throws std::system_error.
int connect_unix(const std::string& path);
// Who is at the other end of a connected Unix socket.
struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
};
PeerCredentials peer_credentials(int fd);

// A new directory (mode 0700) in `parent`, named after this process.
std::string make_private_dir(const std::string& parent);
void remove_dir_tree(const std::string& dir);
// Takes the lock file of a pool's directory, held for the pool's life
// (and released by the kernel when the process dies); returns its fd.
int lock_pool_dir(const std::string& dir);
// Whether a pool's directory was left by a process that has died: it has
// a lock file and nobody holds the lock.
bool pool_dir_abandoned(const std::string& dir);

std::string random_hex(size_t nbytes);

// A shared memory segment holding a copy of `bytes` bytes at `data`; its fd.
int create_shared_segment(const void* data, size_t bytes);
// Maps a segment copy-on-write; nullptr on failure.
void* map_private(int fd, size_t bytes);
void unmap(void* addr, size_t bytes);

// A socket that always polls as readable (its caller closes it); and one
// for the life of the process, made when first asked for.
int ready_socket();
int always_ready_fd();

// Whether `pid` is a child of this process (one we can reap).
bool is_child(pid_t pid);

// Orphaned descendants (the workers the template forks) become our
// children while this is on, so we can reap them. Returns the old setting.
bool set_child_subreaper(bool on);

// Worker side: die with the master, and exit now if it is already gone.
// Exits (saying why on stderr) if the kernel refuses.
void die_with_parent(pid_t expected_parent);

// In a process forked from the template: wait until the master has adopted
// us (we are its child), then die with it. Returns false if it did not.
bool wait_for_adoption(pid_t master, double timeout_seconds);

// Forks a process whose parent becomes the nearest subreaper: a child that
// forks again and exits at once. Returns 0 in the new process and its pid
// in this one. Throws std::system_error.
pid_t fork_orphan();

// Opens (appending, creating it) the file a worker's output goes to;
// -1 with errno set on failure.
int open_output(const std::string& path);
// Points this process's standard output and error at `fd` (closing it),
// or, when `fd` is -1, at the stdout and stderr passed to the process it
// was forked from (SpawnSpec::pass_stdio). Exits, saying why, on failure.
void redirect_output(int fd);

// Keeps a log file below `limit` bytes: if it is larger, only its last
// `keep` bytes stay, after a line saying that earlier output was dropped.
void trim_file(const std::string& path, size_t limit, size_t keep);

// Ends this process at once, as _exit() does: no exit handlers, no flush
// of stdio buffers copied from the parent.
[[noreturn]] void exit_now(int status);

}  // namespace os
}  // namespace bgpool
