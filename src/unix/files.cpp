// The pool's private directory, its lock, log files and random tokens.
#include "../platform.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#if BGPOOL_LINUX
#include <sys/random.h>
#endif
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

namespace bgpool {
namespace os {

namespace {

std::string lock_path(const std::string& dir) { return dir + "/lock"; }

}  // namespace

std::string make_private_dir(const std::string& parent) {
  // The pid in the name says whose it is, to a person looking at it.
  std::string templ = parent + "/bgpool-" + std::to_string(getpid()) + "-XXXXXX";
  if (!mkdtemp(&templ[0])) throw sys_error("cannot create a directory in " + parent);
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

int lock_pool_dir(const std::string& dir) {
  int fd = open(lock_path(dir).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw sys_error("cannot create the lock file of " + dir);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    throw sys_error("cannot lock " + dir);
  }
  return fd;
}

// A lock held by a live process (in this container or another sharing the
// directory) fails to be taken; a dead one's was released by the kernel.
// Process ids are no guide: they are not shared across containers.
bool pool_dir_abandoned(const std::string& dir) {
  int fd = open(lock_path(dir).c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;  // not a pool's directory, or one being made
  bool abandoned = flock(fd, LOCK_EX | LOCK_NB) == 0;
  close(fd);
  return abandoned;
}

void trim_file(const std::string& path, size_t limit, size_t keep) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode) ||
      static_cast<size_t>(info.st_size) <= limit)
    return;
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;
  keep = std::min(keep, static_cast<size_t>(info.st_size));
  std::unique_ptr<char[]> tail(new char[keep]);
  ssize_t got = pread(fd, tail.get(), keep, info.st_size - static_cast<off_t>(keep));
  if (got > 0) {
    // Start at a line: the first one is likely cut.
    const char* from = static_cast<const char*>(std::memchr(tail.get(), '\n', got));
    from = from ? from + 1 : tail.get();
    std::string text = "[bgpool: earlier output of this worker was dropped to keep its log small]\n";
    text.append(from, static_cast<size_t>(tail.get() + got - from));
    // The worker appends (O_APPEND): what it writes goes after this.
    if (ftruncate(fd, 0) == 0) {
      ssize_t ignored = pwrite(fd, text.data(), text.size(), 0);
      (void)ignored;  // a log that could not be rewritten is left short
    }
  }
  close(fd);
}

namespace {

// Fills `out` with random bytes from the kernel.
void random_bytes(unsigned char* out, size_t n) {
#if BGPOOL_LINUX
  size_t got = 0;
  while (got < n) {
    ssize_t rc = getrandom(out + got, n - got, 0);
    if (rc < 0) {
      if (errno == EINTR) continue;
      throw sys_error("getrandom");
    }
    got += static_cast<size_t>(rc);
  }
#else
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw sys_error("cannot open /dev/urandom");
  size_t got = 0;
  while (got < n) {
    ssize_t rc = read(fd, out + got, n - got);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) {
      close(fd);
      throw sys_error("cannot read /dev/urandom");
    }
    got += static_cast<size_t>(rc);
  }
  close(fd);
#endif
}

}  // namespace

std::string random_hex(size_t nbytes) {
  std::unique_ptr<unsigned char[]> bytes(new unsigned char[nbytes]);
  random_bytes(bytes.get(), nbytes);
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < nbytes; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
  return out;
}

}  // namespace os
}  // namespace bgpool
