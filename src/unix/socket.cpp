// Unix domain sockets.
#include "../platform.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace bgpool {
namespace os {

namespace {

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    throw sys_error("socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

int unix_socket(bool nonblocking) {
#if BGPOOL_LINUX
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) throw sys_error("socket");
#else
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) throw sys_error("socket");
  set_flags(fd, nonblocking);
#endif
  no_sigpipe(fd);
  return fd;
}

}  // namespace

void set_flags(int fd, bool nonblocking) {
  fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
  if (nonblocking) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void no_sigpipe(int fd) {
#if defined(SO_NOSIGPIPE)
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof on);
#else
  (void)fd;  // MSG_NOSIGNAL on every send (connection.cpp)
#endif
}

int listen_unix(const std::string& path) {
  sockaddr_un addr = unix_address(path);
  int fd = unix_socket(true);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 ||
      listen(fd, 128) < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    throw sys_error("cannot listen on " + path);
  }
  return fd;
}

int accept_pending(int listen_fd) {
  int fd;
#if BGPOOL_LINUX
  do fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (fd < 0 && errno == EINTR);
#else
  do fd = accept(listen_fd, nullptr, nullptr);
  while (fd < 0 && errno == EINTR);
  if (fd >= 0) {
    set_flags(fd, true);
    no_sigpipe(fd);
  }
#endif
  return fd;
}

int connect_unix(const std::string& path) {
  sockaddr_un addr = unix_address(path);
  int fd = unix_socket(false);
  int rc;
  do rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    throw sys_error("cannot connect to " + path);
  }
  set_flags(fd, true);
  return fd;
}

#if defined(__linux__)
namespace {
// Linux's answer to who is at the other end, uid and pid.
ucred linux_peer(int fd) {
  ucred cred{static_cast<pid_t>(-1), static_cast<uid_t>(-1), static_cast<gid_t>(-1)};
  socklen_t len = sizeof(cred);
  getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
  return cred;
}
}  // namespace
#endif

PeerCredentials peer_credentials(int fd) {
  PeerCredentials out;
#if BGPOOL_LINUX
  ucred cred = linux_peer(fd);
  out.pid = cred.pid;
  out.uid = cred.uid;
#elif defined(__linux__)
  // The POSIX-only build on Linux, whose C library has no getpeereid():
  // the uid alone, as getpeereid() gives it elsewhere.
  out.uid = linux_peer(fd).uid;
#else
  gid_t gid;
  if (getpeereid(fd, &out.uid, &gid) != 0) out.uid = static_cast<uid_t>(-1);
#if defined(LOCAL_PEERPID)
  pid_t pid = -1;
  socklen_t len = sizeof pid;
  if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, &pid, &len) == 0) out.pid = pid;
#endif
#endif
  return out;
}

int ready_socket() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0) throw sys_error("socketpair");
  set_flags(pair[0], false);
  char byte = 1;
  ssize_t rc = write(pair[1], &byte, 1);
  close(pair[1]);  // (the byte stays readable)
  if (rc != 1) {
    close(pair[0]);
    throw sys_error("write");
  }
  return pair[0];
}

int always_ready_fd() {
  static int fd = ready_socket();
  return fd;
}

}  // namespace os
}  // namespace bgpool
