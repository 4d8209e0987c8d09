// A psock worker's own standard output and error (R/backend-psock.R):
// parallel sends what R prints to the workers' log, but a program a task
// runs (system()) writes to the descriptors the worker inherited, which are
// its master's console. Pointing them at the log keeps that off it too.
#include <Rcpp.h>
#include <fcntl.h>
#ifdef _WIN32
#include <io.h>
#include <sys/stat.h>
#else
#include <unistd.h>
#endif

namespace {

#ifdef _WIN32
int open_for_append(const char* path) {
  return _open(path, _O_WRONLY | _O_APPEND | _O_CREAT | _O_BINARY, _S_IREAD | _S_IWRITE);
}
int copy_descriptor(int from, int to) { return _dup2(from, to); }
int close_descriptor(int fd) { return _close(fd); }
#else
int open_for_append(const char* path) {
  return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0600);
}
int copy_descriptor(int from, int to) { return dup2(from, to); }
int close_descriptor(int fd) { return close(fd); }
#endif

}  // namespace

// Whether a worker could open `path` to append its output (a named pipe
// nobody reads cannot be, and would block a worker that tried).
// [[Rcpp::export(rng = false)]]
bool can_append_to(std::string path) {
  int fd = open_for_append(path.c_str());
  if (fd < 0) return false;
  close_descriptor(fd);
  return true;
}

// Sends descriptors 1 and 2 to `path`, appended to; whether that worked.
// [[Rcpp::export(rng = false)]]
bool redirect_std_streams(std::string path) {
  int fd = open_for_append(path.c_str());
  if (fd < 0) return false;
  bool done = copy_descriptor(fd, 1) >= 0 && copy_descriptor(fd, 2) >= 0;
  close_descriptor(fd);
  return done;
}
