// R values to and from a Connection with R's own serializer (binary
// format, version 3).
#pragma once

#include <Rinternals.h>

#include <vector>

#include "connection.h"

namespace bgpool {

// Writes `x` as one message. The serializer streams: vector data goes from
// the vector's memory to the socket, and shared vectors (shared.h) go as
// references, their descriptors with the message. Returns false when the
// link failed (the rest of the value was then serialized to nowhere). If R
// jumps out of the serializer, the message is aborted (the peer drops it)
// and the jump goes on.
bool write_message(Connection& conn, SEXP x);

// The value in the message `conn` read last (whole, in memory); shared
// vectors in it are mapped from the message's descriptors.
SEXP read_value(Connection& conn);

// Shared copies of the large vectors in values about to be sent, released
// (their memory left to those that map it) when this goes.
class SharedCopies {
 public:
  SharedCopies() = default;
  ~SharedCopies();
  SharedCopies(const SharedCopies&) = delete;
  SharedCopies& operator=(const SharedCopies&) = delete;
  // `x` with its vectors of at least `threshold` bytes as shared copies.
  SEXP share(SEXP x, double threshold);

 private:
  std::vector<SEXP> made_;
};

}  // namespace bgpool
