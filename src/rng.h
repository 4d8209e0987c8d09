// L'Ecuyer-CMRG random number streams as the parallel package makes them:
// stream k + 1 is parallel::nextRNGStream() of stream k, a jump of 2^127
// steps of the MRG32k3a generator. Jumping any number of streams ahead is
// a product of powers of the two component matrices of that jump.
#pragma once

#include <Rcpp.h>

#include <array>
#include <cstdint>

namespace bgpool {

// The generator's state: three values mod m1, then three mod m2.
using RngState = std::array<uint64_t, 6>;

// The state `streams` streams after `state`.
RngState jump_streams(const RngState& state, uint64_t streams);

// Gives each task of a chunk its own stream: enter(k) sets .Random.seed in
// the global environment to the stream k streams after `base` (an
// L'Ecuyer-CMRG .Random.seed). Tasks mostly come in increasing order, so
// each stream is reached from the previous one, in a single step when they
// are consecutive.
class TaskStreams {
 public:
  explicit TaskStreams(SEXP base);
  void enter(uint64_t stream);

 private:
  int kind_;  // .Random.seed[1]: the generator, normal and sample kinds
  RngState base_, current_;
  uint64_t stream_ = 0;
};

}  // namespace bgpool
