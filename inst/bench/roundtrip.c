/* The floor under a round trip on this machine: two processes that pass
 * a 64-byte message back and forth over a Unix socket pair, as bgpool's
 * master and a worker do, with nothing else in the way. bench.R builds
 * and runs it in the same run as the other round trips (W3).
 *
 * Usage: roundtrip [calls [same|apart]]   prints the median and the
 * minimum, in microseconds, of `calls` round trips (default 2000) after 200
 * warm-ups. Where the scheduler puts the two processes decides the cost:
 * waking a process on a CPU that went idle costs far more than passing the
 * bytes (above all on virtual machines). `same` pins both to CPU 0, `apart`
 * the parent to CPU 0 and the child to CPU 1 (Linux only; elsewhere, or
 * with one CPU, it prints "NA NA"); without either the scheduler decides. */
#ifdef __linux__
#define _GNU_SOURCE
#include <sched.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Pins this process to `cpu`; 0 where that cannot be done. */
static int pin(int cpu) {
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0;
#else
  (void)cpu;
  return 0;
#endif
}

static int exchange(int fd, char *buf, size_t n) {
  return write(fd, buf, n) == (ssize_t)n && read(fd, buf, n) == (ssize_t)n;
}

int main(int argc, char **argv) {
  int calls = argc > 1 ? atoi(argv[1]) : 2000, pair[2];
  const char *placement = argc > 2 ? argv[2] : "";
  int child_cpu = strcmp(placement, "same") == 0 ? 0 : strcmp(placement, "apart") == 0 ? 1 : -1;
  char buf[64] = {0};
  if (child_cpu >= 0 && (!pin(child_cpu) || !pin(0))) {
    printf("NA NA\n");
    return 0;
  }
  if (calls < 1 || socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return 1;
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    if (child_cpu >= 0) pin(child_cpu);
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
