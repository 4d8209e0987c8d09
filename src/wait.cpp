// poll() in slices; see wait.h.
#include "wait.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include "clock.h"

namespace bgpool {

WaitResult wait_fds(pollfd* fds, size_t n, double deadline, bool (*interrupt_poll)()) {
  double spin_until = monotonic_seconds() + kSpinSeconds;
  if (deadline < 0 || deadline > spin_until) {
    do {
      int rc = poll(fds, static_cast<nfds_t>(n), 0);
      if (rc > 0) return WaitResult::Ready;
      if (rc < 0 && errno != EINTR) break;  // the sleeping poll() below says why
      sched_yield();  // to a process this CPU could run instead, such as a worker
    } while (monotonic_seconds() < spin_until);
  }
  for (;;) {
    double slice = kWaitSlice;
    if (deadline >= 0) {
      double left = deadline - monotonic_seconds();
      if (left <= 0) slice = 0;
      slice = std::min(slice, std::max(0.0, left));
    }
    int rc = poll(fds, static_cast<nfds_t>(n), static_cast<int>(std::ceil(slice * 1000)));
    if (rc > 0) return WaitResult::Ready;
    if (rc < 0 && errno != EINTR) {
      // EINVAL or ENOMEM: nothing to wait on that poll() accepts; let the
      // callers see each descriptor as failed.
      for (size_t i = 0; i < n; ++i) fds[i].revents = POLLERR;
      return WaitResult::Ready;
    }
    if (interrupt_poll && interrupt_poll()) return WaitResult::Interrupted;
    if (deadline >= 0 && monotonic_seconds() >= deadline) return WaitResult::TimedOut;
  }
}

}  // namespace bgpool
