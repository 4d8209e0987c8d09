/* The floor under a round trip on this machine: two processes that pass
 * a 64-byte message back and forth over a Unix socket pair, as bgpool's
 * master and a worker do, with nothing else in the way. bench.R builds
 * and runs it in the same run as the other round trips (W3).
 *
 * Usage: roundtrip [calls]   prints the median and the minimum, in
 * microseconds, of `calls` round trips (default 2000) after 200 warm-ups. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int exchange(int fd, char *buf, size_t n) {
  return write(fd, buf, n) == (ssize_t)n && read(fd, buf, n) == (ssize_t)n;
}

int main(int argc, char **argv) {
  int calls = argc > 1 ? atoi(argv[1]) : 2000, pair[2];
  char buf[64] = {0};
  if (calls < 1 || socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return 1;
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    close(pair[0]);
    while (read(pair[1], buf, sizeof buf) == (ssize_t)sizeof buf)
      if (write(pair[1], buf, sizeof buf) != (ssize_t)sizeof buf) break;
    _exit(0);
  }
  close(pair[1]);
  double *t = malloc(calls * sizeof *t);
  for (int i = 0; i < 200; i++)
    if (!exchange(pair[0], buf, sizeof buf)) return 1;
  for (int i = 0; i < calls; i++) {
    double t0 = now();
    if (!exchange(pair[0], buf, sizeof buf)) return 1;
    t[i] = now() - t0;
  }
  close(pair[0]);
  waitpid(child, NULL, 0);
  qsort(t, calls, sizeof *t, compare);
  printf("%.2f %.2f\n", t[calls / 2] * 1e6, t[0] * 1e6);
  return 0;
}
