// Unix domain sockets, the pool's private directory and random tokens.
#include "../platform.h"

#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
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

}  // namespace

int listen_unix(const std::string& path) {
  sockaddr_un addr = unix_address(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw sys_error("socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 ||
      listen(fd, 128) < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    throw sys_error("cannot listen on " + path);
  }
  return fd;
}

int accept_unix(int listen_fd) {
  int fd;
  do fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  return fd;
}

int connect_unix(const std::string& path) {
  sockaddr_un addr = unix_address(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw sys_error("socket");
  int rc;
  do rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    throw sys_error("cannot connect to " + path);
  }
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return fd;
}

PeerCredentials peer_credentials(int fd) {
  PeerCredentials out;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    out.pid = cred.pid;
    out.uid = cred.uid;
  }
  return out;
}

std::vector<int> open_fds() {
  std::vector<int> fds;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) throw sys_error("cannot list /proc/self/fd");
  int own = dirfd(dir);
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    int fd = std::atoi(entry->d_name);
    if (fd != own) fds.push_back(fd);
  }
  closedir(dir);
  return fds;
}

bool is_tcp_listener(int fd) {
  int listening = 0, domain = 0;
  socklen_t len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) return false;
  len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return false;
  return listening && (domain == AF_INET || domain == AF_INET6);
}

void replace_fd(int source, int target) {
  int rc;
  do rc = dup3(source, target, O_CLOEXEC);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) throw sys_error("dup3");
}

int readable_socket() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) throw sys_error("socketpair");
  char byte = 1;
  ssize_t rc = write(pair[1], &byte, 1);
  close(pair[1]);
  if (rc != 1) {
    close(pair[0]);
    throw sys_error("write");
  }
  return pair[0];
}

void shutdown_socket(int fd) { shutdown(fd, SHUT_RDWR); }

std::string make_private_dir(const std::string& parent) {
  // The pid in the name lets a later session find the directories of a
  // master that was killed before it could remove them (R/pool.R).
  std::string templ = parent + "/bgpool-" + std::to_string(getpid()) + "-XXXXXX";
  if (!mkdtemp(&templ[0])) throw sys_error("cannot create a directory in " + parent);
  chmod(templ.c_str(), 0700);  // mkdtemp does this already; say it anyway
  return templ;
}

void remove_dir_tree(const std::string& dir) {
  nftw(
      dir.c_str(),
      [](const char* path, const struct stat*, int type, struct FTW*) {
        return (type == FTW_DP ? rmdir(path) : unlink(path)), 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

std::string random_hex(size_t nbytes) {
  std::vector<unsigned char> bytes(nbytes);
  size_t got = 0;
  while (got < nbytes) {
    ssize_t rc = getrandom(bytes.data() + got, nbytes - got, 0);
    if (rc < 0) {
      if (errno == EINTR) continue;
      throw sys_error("getrandom");
    }
    got += static_cast<size_t>(rc);
  }
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

}  // namespace os
}  // namespace bgpool
