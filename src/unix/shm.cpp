// Shared memory segments: memory files that processes map. Linux makes
// them with memfd_create(); POSIX with shm_open() under a random name that
// is unlinked at once, so that the descriptor is the only way to it.
#include "../platform.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace bgpool {
namespace os {

namespace {

int new_segment(const char* name) {
#if BGPOOL_LINUX
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) throw sys_error("memfd_create");
  return fd;
#else
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string path = std::string("/") + name + "-" + random_hex(6);
    int fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) throw sys_error("shm_open");
    shm_unlink(path.c_str());
    set_flags(fd, false);
    return fd;
  }
  throw sys_error("shm_open");
#endif
}

}  // namespace

// Sized with ftruncate() and filled through a mapping: what every POSIX
// system allows on such a file (macOS refuses write() on one).
int create_shared_segment(const char* name, const void* data, size_t bytes) {
  int fd = new_segment(name);
  if (bytes == 0) return fd;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    throw sys_error("cannot size a shared memory segment");
  }
  if (data) {
    void* addr = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
      int saved = errno;
      close(fd);
      errno = saved;
      throw sys_error("cannot fill a shared memory segment");
    }
    std::memcpy(addr, data, bytes);
    munmap(addr, bytes);
  }
  return fd;
}

void* map_private(int fd, size_t bytes) {
  // Private: a worker that writes to its copy gets its own pages.
  void* addr = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  return addr == MAP_FAILED ? nullptr : addr;
}

void* map_shared(int fd, size_t bytes) {
  void* addr = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return addr == MAP_FAILED ? nullptr : addr;
}

void unmap(void* addr, size_t bytes) { munmap(addr, bytes); }

}  // namespace os
}  // namespace bgpool
