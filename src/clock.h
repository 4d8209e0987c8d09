// Monotonic time in seconds, for deadlines and task timing.
#pragma once

#include <chrono>

namespace bgpool {

inline double monotonic_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

}  // namespace bgpool
