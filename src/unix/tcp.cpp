// TCP sockets, for hosts whose workers connect to the master over the
// network (Slurm jobs); only while the pool starts workers does it listen.
#include "../platform.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace bgpool {
namespace os {

namespace {

struct AddressList {
  addrinfo* list = nullptr;
  ~AddressList() {
    if (list) freeaddrinfo(list);
  }
};

AddressList resolve(const std::string& host, const std::string& port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  AddressList found;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found.list);
  if (rc != 0)
    throw std::runtime_error("cannot resolve " + host + ": " + gai_strerror(rc));
  return found;
}

}  // namespace

void no_delay(int fd) {
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int listen_tcp(const std::string& address, int* port) {
  AddressList found = resolve(address, "0", true);
  int saved = 0;
  for (addrinfo* a = found.list; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    set_flags(fd, true);
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) == 0) {
      *port = ntohs(bound.ss_family == AF_INET6
                        ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      return fd;
    }
    saved = errno;
    close(fd);
  }
  errno = saved;
  throw sys_error("cannot listen on " + address);
}

int connect_tcp(const std::string& host, const std::string& port) {
  AddressList found = resolve(host, port, false);
  int saved = 0;
  for (addrinfo* a = found.list; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    int rc;
    do rc = connect(fd, a->ai_addr, a->ai_addrlen);
    while (rc < 0 && errno == EINTR);
    if (rc == 0) {
      set_flags(fd, true);
      no_sigpipe(fd);
      no_delay(fd);
      return fd;
    }
    saved = errno;
    close(fd);
  }
  errno = saved;
  throw sys_error("cannot connect to " + host + ":" + port);
}

}  // namespace os
}  // namespace bgpool
