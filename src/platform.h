// Operating-system services the portable core needs: processes, Unix
// sockets, private directories, shared memory, randomness. Implemented in
// unix/ for POSIX systems (Linux and macOS): the POSIX calls everywhere,
// and Linux's own where they are faster (memfd segments, SO_PEERCRED,
// accept4(), getrandom()). A build with BGPOOL_POSIX_ONLY=1 in the
// environment (src/Makevars) uses the POSIX calls on Linux too, so that
// the path macOS takes is built and tested on Linux.
#pragma once

#if !defined(BGPOOL_POSIX_ONLY_FLAG)
#define BGPOOL_POSIX_ONLY_FLAG 0
#endif
#if defined(__linux__) && !BGPOOL_POSIX_ONLY_FLAG
#define BGPOOL_LINUX 1
#else
#define BGPOOL_LINUX 0
#endif

#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace bgpool {
namespace os {

inline std::system_error sys_error(const std::string& what) {
  return std::system_error(errno, std::generic_category(), what);
}

// Which of the two builds this is, for R (pool_platform()).
inline const char* platform_name() { return BGPOOL_LINUX ? "linux" : "posix"; }

struct SpawnSpec {
  std::string program;
  std::vector<std::string> args;            // argv[1..]
  std::vector<std::string> extra_env;       // "NAME=value", added to ours
  std::string log_path;                     // stdout and stderr go here (empty: ours)
  // Descriptors of ours the child gets, as (ours, the child's number); its
  // stdin is /dev/null unless 0 is among them.
  std::vector<std::pair<int, int>> pass_fds;
};

// Starts a process in its own process group, so that Ctrl-C in the
// master's terminal reaches the master only. Throws std::system_error.
pid_t spawn(const SpawnSpec& spec);

struct ExitInfo {
  bool exited = false;   // false: still running
  int status = 0;        // exit status, when !signaled
  int signal = 0;        // terminating signal, or 0
  bool known = true;     // false: it is gone, but how it ended is not known
};
// Non-blocking: reaps the child `pid` if it has ended.
ExitInfo reap(pid_t pid);
// Non-blocking: reaps any child that has ended; pid 0 when none has.
std::pair<pid_t, ExitInfo> reap_any();
// Whether a process (not necessarily our child) is gone.
bool gone(pid_t pid);
void send_signal(pid_t pid, int sig);
std::string signal_name(int sig);
// "exited with status 3", "was killed by SIGKILL"
std::string describe_exit(const ExitInfo& exit);

// A listening Unix socket at `path` (non-blocking, close-on-exec).
int listen_unix(const std::string& path);
// Accepts one pending connection (of a Unix or TCP socket), or returns -1
// when none is waiting.
int accept_pending(int listen_fd);
// Connects (blocking) to `path`; throws std::system_error.
int connect_unix(const std::string& path);
// A listening TCP socket on `address` (non-blocking, close-on-exec), on a
// port the system picks (set in `port`).
int listen_tcp(const std::string& address, int* port);
// Connects (blocking) to host:port; the socket is non-blocking after, and
// sends small messages at once (TCP_NODELAY). Throws.
int connect_tcp(const std::string& host, const std::string& port);
void no_delay(int fd);
// Who is at the other end of a connected Unix socket; pid -1 where the
// system does not say.
struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
};
PeerCredentials peer_credentials(int fd);
// Makes a socket's writes never raise SIGPIPE (where MSG_NOSIGNAL is not).
void no_sigpipe(int fd);
// Marks a descriptor close-on-exec (and non-blocking, if asked).
void set_flags(int fd, bool nonblocking);

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

// A shared memory segment holding a copy of `bytes` bytes at `data` (or
// zeros, for null data); its fd. `name` (short: macOS allows 31 bytes
// with the random suffix) is what tools that list descriptors show.
int create_shared_segment(const char* name, const void* data, size_t bytes);
// Maps a segment copy-on-write (private) or shared; nullptr on failure.
void* map_private(int fd, size_t bytes);
void* map_shared(int fd, size_t bytes);
void unmap(void* addr, size_t bytes);

// A socket that always polls as readable (its caller closes it); and one
// for the life of the process, made when first asked for.
int ready_socket();
int always_ready_fd();

// A pipe, both ends close-on-exec: {read end, write end}.
std::pair<int, int> make_pipe();

// Ends this process (as exit_now(1)) as soon as `fd` hangs up: the
// master's end of the lifeline closes when the master dies, however it
// dies. Watched by a thread that only polls.
void exit_with_lifeline(int fd);

// Opens (appending, creating it) the file a worker's output goes to;
// -1 with errno set on failure.
int open_output(const std::string& path);
// Points this process's standard output and error at `fd` (closing it),
// or, when `fd` is -1, at the descriptors `out` and `err` (the master's own
// output, passed to the template). Exits, saying why, on failure.
void redirect_output(int fd, int out, int err);

// Keeps a log file below `limit` bytes: if it is larger, only its last
// `keep` bytes stay, after a line saying that earlier output was dropped.
void trim_file(const std::string& path, size_t limit, size_t keep);

// Ends this process at once, as _exit() does: no exit handlers, no flush
// of stdio buffers copied from the parent.
[[noreturn]] void exit_now(int status);

}  // namespace os
}  // namespace bgpool
