// Waiting on descriptors, the one way the core waits: poll() in slices of
// at most kWaitSlice, asking between slices whether an interrupt is
// pending, so that a wait never outlasts an interrupt by more than that.
#pragma once

#include <poll.h>

#include <cstddef>

namespace bgpool {

constexpr double kWaitSlice = 0.1;

// A wait first polls without sleeping for this long: waking a process that
// sleeps costs its CPU tens of microseconds where that CPU has gone idle
// (on virtual machines above all), more than the rest of a small call's
// round trip, and the answer to a small request comes sooner than that.
constexpr double kSpinSeconds = 100e-6;

enum class WaitResult { Ready, TimedOut, Interrupted };

// Waits until one of `fds` has an event (their revents are then set), until
// `deadline` (monotonic seconds; < 0: none) or until `interrupt_poll` (if
// not null) returns true.
WaitResult wait_fds(pollfd* fds, size_t n, double deadline, bool (*interrupt_poll)());

}  // namespace bgpool
