// Shared-memory segments (Linux memfd) for vectors that every worker maps.
#include "../platform.h"

#include <sys/mman.h>
#include <unistd.h>

namespace bgpool {
namespace os {

int create_shared_segment(const void* data, size_t bytes) {
  int fd = memfd_create("bgpool", MFD_CLOEXEC);
  if (fd < 0) throw sys_error("memfd_create");
  const char* from = static_cast<const char*>(data);
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = write(fd, from + done, bytes - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      close(fd);
      errno = saved;
      throw sys_error("cannot fill a shared memory segment");
    }
    done += static_cast<size_t>(n);
  }
  return fd;
}

void* map_private(int fd, size_t bytes) {
  // Private: a worker that writes to its copy gets its own pages.
  void* addr = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  return addr == MAP_FAILED ? nullptr : addr;
}

void unmap(void* addr, size_t bytes) { munmap(addr, bytes); }

}  // namespace os
}  // namespace bgpool
